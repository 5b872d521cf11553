/**
 * The hand-written pipeline's wire: one generic grpc-js unary method carrying JSON in raw buffers,
 * no proto compiler, no framework, as a team would write it in an afternoon.
 */
import * as grpc from "@grpc/grpc-js";

const identity = (b: Buffer): Buffer => b;

/** `bench.Worker/Run`: JSON request buffer in, JSON reply buffer out. */
export const workerService = {
  run: {
    path: "/bench.Worker/Run",
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
} satisfies grpc.ServiceDefinition;

/** Client class of {@link workerService}. */
export const WorkerClient = grpc.makeGenericClientConstructor(workerService, "bench.Worker");
