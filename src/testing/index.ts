export { OrchestratorError } from "../errors.ts";
export { MemoryQueue } from "../queue/memory-queue.ts";
export type { MemoryQueueOptions, MemoryQueueEvents, MemoryQueueInfo } from "../queue/memory-queue.ts";
export { InProcessTransport } from "../transport/in-process-transport.ts";
export type { InProcessTransportOptions } from "../transport/in-process-transport.ts";
export { describeQueueContract, contractJob } from "./contracts/queue-contract.ts";
export type { QueueContractFactory, QueueContractSubject, QueueContractOptions } from "./contracts/queue-contract.ts";
export { describeTransportContract } from "./contracts/transport-contract.ts";
export type {
  TransportContractFactory, TransportContractSubject, TransportContractWorker, TransportContractOptions,
} from "./contracts/transport-contract.ts";
export { describeJobStoreContract, contractRecord } from "./contracts/job-store-contract.ts";
export type { JobStoreContractFactory, JobStoreContractSubject } from "./contracts/job-store-contract.ts";
export { MemoryJobStore } from "../store/memory-job-store.ts";
export { contractHandlers, contractHandlerNames } from "./contract-handlers.ts";
export type { ContractHandlerName, AbortMarker } from "./contract-handlers.ts";
export { deferred } from "./deferred.ts";
export type { Deferred } from "./deferred.ts";
export { latch } from "./latch.ts";
export type { Latch } from "./latch.ts";
export { rejectionOf } from "./rejection-of.ts";
export { waitFor } from "./wait-for.ts";
export type { WaitForOptions } from "./wait-for.ts";
export { TcpProxy } from "./tcp-proxy.ts";
export { RabbitMqNodes } from "./broker/rabbitmq-nodes.ts";
export type { RabbitMqNodesOptions, RabbitMqNodeInfo, RabbitMqNodeState } from "./broker/rabbitmq-nodes.ts";
