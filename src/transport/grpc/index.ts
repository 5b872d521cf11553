export { OrchestratorError } from "../../errors.ts";
export { GrpcTransport } from "./grpc-transport.ts";
export type { GrpcTransportOptions, GrpcTransportTlsOptions } from "./grpc-transport.ts";
