import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { DescMessage, DescService, MessageShape } from "@bufbuild/protobuf";
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";
import { invalidArgument, OrchestratorError } from "../errors.ts";
import { checkInteger, optional } from "../validate.ts";
import { CancelReason as WireCancelReason, LogStream, WorkerService } from "../gen/blacktree/orchestrator/v1/worker_pb.ts";
import { Health } from "../gen/grpc/health/v1/health_pb.ts";
import type { CancelReason } from "../job/types.ts";
import type { FlushMode } from "./batcher.ts";

/**
 * What both ends of the gRPC wire share: grpc-js service definitions whose (de)serializers are
 * the protobuf-es generated schemas, the JSON payload codec, and enum mappings.
 * @internal
 */

/** Largest message accepted or sent by default, both directions (connect's default is ~4 GiB). */
export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/** The `maxMessageBytes` option of either end checked (64 KiB up to grpc-js's int32 limit), or its default. */
export function resolveMaxMessageBytes(value: unknown): number {
  return optional(value, DEFAULT_MAX_MESSAGE_BYTES, (v) => checkInteger("maxMessageBytes", v, 64 * 1024, 2 ** 31 - 1));
}

function serializer<T extends DescMessage>(schema: T): (value: MessageShape<T>) => Buffer {
  return (value) => {
    const bytes = toBinary(schema, value);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer<T extends DescMessage>(schema: T): (bytes: Buffer) => MessageShape<T> {
  return (bytes) => fromBinary(schema, bytes);
}

/** A grpc-js `ServiceDefinition` for a protobuf-es service descriptor. */
export function grpcServiceDefinition(service: DescService): ServiceDefinition {
  const definition: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: serializer(method.input) as (value: unknown) => Buffer,
      requestDeserialize: deserializer(method.input),
      responseSerialize: serializer(method.output) as (value: unknown) => Buffer,
      responseDeserialize: deserializer(method.output),
      originalName: method.localName,
    };
  }
  return definition as ServiceDefinition;
}

/** The worker service as grpc-js sees it; method keys are the protobuf-es local names (`session`, `execute`, …). */
export const workerServiceDefinition = grpcServiceDefinition(WorkerService);
/** The standard `grpc.health.v1.Health` service. */
export const healthServiceDefinition = grpcServiceDefinition(Health);

/**
 * Session call metadata in which the orchestrator announces how often it pings (milliseconds
 * between two Pings) and after how long without a Pong it declares the session lost; the worker
 * derives from them when it counts as stalled (docs/wire.md, "A worker that stalls").
 */
export const PING_INTERVAL_HEADER = "blacktree-ping-interval-ms";
/** See {@link PING_INTERVAL_HEADER}. */
export const PING_TIMEOUT_HEADER = "blacktree-ping-timeout-ms";

/** The method definition `name` of `definition`, for `Client.make*Request`. */
export function methodOf(definition: ServiceDefinition, name: string): MethodDefinition<unknown, unknown> {
  const method = definition[name];
  if (!method) throw new OrchestratorError("internal", `no method ${name} in the service definition`);
  return method as MethodDefinition<unknown, unknown>;
}

const empty = new Uint8Array(0);

/** Encodes a JSON value as UTF-8 bytes; `undefined` becomes empty bytes. */
export function encodeJson(value: unknown, what: string): Uint8Array {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (cause) {
    throw new OrchestratorError("invalid_argument", `${what} is not JSON-serialisable: ${(cause as Error).message}`, { cause, retryable: false });
  }
  return text === undefined ? empty : Buffer.from(text);
}

/** Decodes UTF-8 JSON bytes; empty bytes are `undefined`. */
export function decodeJson(bytes: Uint8Array, what: string): unknown {
  if (bytes.byteLength === 0) return undefined;
  try {
    return JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"));
  } catch (cause) {
    throw new OrchestratorError("invalid_argument", `${what} is not valid JSON: ${(cause as Error).message}`, { cause, retryable: false });
  }
}

const reasonToWire: Readonly<Record<CancelReason, WireCancelReason>> = {
  requested: WireCancelReason.REQUESTED,
  timeout: WireCancelReason.TIMEOUT,
  shutdown: WireCancelReason.SHUTDOWN,
  worker_lost: WireCancelReason.WORKER_LOST,
};

/** The protocol enum of a cancel reason. */
export function cancelReasonToWire(reason: CancelReason): WireCancelReason {
  return reasonToWire[reason];
}

/** The cancel reason of the protocol enum; unspecified and unknown values read as `requested`. */
export function cancelReasonFromWire(reason: WireCancelReason | number): CancelReason {
  switch (reason) {
    case WireCancelReason.TIMEOUT:
      return "timeout";
    case WireCancelReason.SHUTDOWN:
      return "shutdown";
    case WireCancelReason.WORKER_LOST:
      return "worker_lost";
    default:
      return "requested";
  }
}

/** The protocol enum of a log stream. */
export function logStreamToWire(stream: "stdout" | "stderr" | undefined): LogStream {
  return stream === "stderr" ? LogStream.STDERR : stream === "stdout" ? LogStream.STDOUT : LogStream.UNSPECIFIED;
}

/** The log stream of the protocol enum; unspecified is `undefined`. */
export function logStreamFromWire(stream: LogStream | number): "stdout" | "stderr" | undefined {
  return stream === LogStream.STDERR ? "stderr" : stream === LogStream.STDOUT ? "stdout" : undefined;
}

/** Checks a PEM option (string or Buffer) and returns it as a Buffer. */
export function checkPem(field: string, value: unknown): Buffer {
  if (typeof value === "string" && value.length > 0) return Buffer.from(value);
  if (Buffer.isBuffer(value) && value.length > 0) return value;
  throw invalidArgument(field, "a non-empty PEM string or Buffer", value);
}

/** Checks the internal `flushMode` option. */
export function checkFlushMode(value: unknown): FlushMode {
  if (value !== "immediate" && value !== "microtask" && value !== "none") throw invalidArgument("flushMode", `"immediate", "microtask" or "none"`, value);
  return value;
}
