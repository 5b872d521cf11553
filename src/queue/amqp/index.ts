export { OrchestratorError } from "../../errors.ts";
export { AmqpConnection } from "./amqp-connection.ts";
export type { AmqpConnectionOptions, AmqpConnectionEvents, AmqpConnectionState, AmqpNodeInfo, AmqpReconnectOptions } from "./amqp-connection.ts";
export { AmqpQueue } from "./amqp-queue.ts";
export type { AmqpQueueOptions, AmqpQueueEvents, DeadLettersOptions } from "./amqp-queue.ts";
export { AmqpEvents } from "./amqp-events.ts";
export type { AmqpEventsOptions, AmqpEventsEvents } from "./amqp-events.ts";
export { DEFAULT_QUEUE_NAME } from "./topology.ts";
export type { AmqpTopologyNames } from "./topology.ts";
