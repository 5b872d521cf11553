import { create } from "@bufbuild/protobuf";
import { status as GrpcStatus } from "@grpc/grpc-js";
import type { sendUnaryData, ServerUnaryCall, ServerWritableStream, UntypedServiceImplementation } from "@grpc/grpc-js";
import { HealthCheckResponse_ServingStatus as ServingStatus, HealthCheckResponseSchema } from "../gen/grpc/health/v1/health_pb.ts";
import type { HealthCheckRequest, HealthCheckResponse } from "../gen/grpc/health/v1/health_pb.ts";

/**
 * The standard `grpc.health.v1.Health` service of a worker, as
 * https://github.com/grpc/grpc/blob/master/doc/health-checking.md describes it: `Check` answers an
 * unknown service with NOT_FOUND; `Watch` sends the current status at once (SERVICE_UNKNOWN for an
 * unknown service, without ending the call) and then every change.
 * @internal
 */
export class HealthService {
  readonly #statuses = new Map<string, ServingStatus>();
  readonly #watchers = new Map<string, Set<ServerWritableStream<HealthCheckRequest, HealthCheckResponse>>>();

  /** Registers `services` (use "" for the server as a whole), all SERVING. */
  constructor(services: readonly string[]) {
    for (const service of services) this.#statuses.set(service, ServingStatus.SERVING);
  }

  /** Sets every registered service to SERVING or NOT_SERVING and tells their watchers. */
  setAll(serving: boolean): void {
    const status = serving ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
    for (const [service, current] of this.#statuses) {
      if (current === status) continue;
      this.#statuses.set(service, status);
      for (const call of this.#watchers.get(service) ?? []) send(call, status);
    }
  }

  /** Ends every Watch call (OK status), so the server can shut down. */
  endWatches(): void {
    for (const calls of this.#watchers.values()) for (const call of calls) call.end();
    this.#watchers.clear();
  }

  /** The grpc-js implementation, keyed like `healthServiceDefinition`. */
  implementation(): UntypedServiceImplementation {
    return {
      check: (call: ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, callback: sendUnaryData<HealthCheckResponse>) => {
        const status = this.#statuses.get(call.request.service);
        if (status === undefined) {
          callback({ code: GrpcStatus.NOT_FOUND, details: `unknown service ${JSON.stringify(call.request.service)}` });
          return;
        }
        callback(null, create(HealthCheckResponseSchema, { status }));
      },
      watch: (call: ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => {
        const service = call.request.service;
        let calls = this.#watchers.get(service);
        if (!calls) {
          calls = new Set();
          this.#watchers.set(service, calls);
        }
        calls.add(call);
        // Anyone may Watch (probes need no credentials): forget a service name once its last
        // watcher goes, so watching many names cannot grow the map for good.
        const remove = () => {
          calls.delete(call);
          if (calls.size === 0 && this.#watchers.get(service) === calls) this.#watchers.delete(service);
        };
        call.on("cancelled", remove);
        call.on("error", remove);
        call.on("finish", remove);
        send(call, this.#statuses.get(service) ?? ServingStatus.SERVICE_UNKNOWN);
      },
    };
  }
}

function send(call: ServerWritableStream<HealthCheckRequest, HealthCheckResponse>, status: ServingStatus): void {
  if (!call.cancelled && call.writable) call.write(create(HealthCheckResponseSchema, { status }));
}
