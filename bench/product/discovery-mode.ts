/**
 * Discovery in the bench's product processes, chosen by the environment so the features section
 * can run the same product with and without it in the same rounds:
 * - `BENCH_DISCOVERY_EXCHANGE` unset: the orchestrator adds the workers it is given (the reference);
 * - set: every worker announces itself on that fanout exchange (`announceWorker()`, heartbeat every
 *   2 s) and the orchestrator finds them with `WorkerDiscovery` + `BrokerWorkers`, as a build farm
 *   whose workers come and go would run it. The bench deletes the exchange after the round.
 */
import { announceWorker, type WorkerAnnouncer } from "../../src/discovery/broker-announcer.ts";
import { BrokerWorkers } from "../../src/discovery/broker-workers.ts";
import { WorkerDiscovery } from "../../src/discovery/worker-discovery.ts";
import type { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { GrpcTransport } from "../../src/transport/grpc/grpc-transport.ts";
import type { WorkerDescription } from "../../src/transport/types.ts";
import type { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { AMQP_URL } from "../lib/rabbit.ts";

/** The exchange of this round's announcements, or undefined when discovery is off. */
export function discoveryExchange(): string | undefined {
  const exchange = process.env.BENCH_DISCOVERY_EXCHANGE;
  return exchange === undefined || exchange === "" ? undefined : exchange;
}

/** In a worker process: announces it when discovery is on; undefined otherwise. */
export async function announceIfDiscovering(address: string, description: WorkerDescription): Promise<WorkerAnnouncer | undefined> {
  const exchange = discoveryExchange();
  if (exchange === undefined) return undefined;
  return announceWorker({ url: AMQP_URL, address, description, exchange, intervalMs: 2000 });
}

/**
 * In the orchestrator: when discovery is on, a started `WorkerDiscovery` filling `pool` from the
 * announcements (on the orchestrator's own AMQP connection); undefined otherwise.
 */
export async function discoverWorkers(pool: WorkerPool, connection: AmqpConnection, slots: number): Promise<WorkerDiscovery | undefined> {
  const exchange = discoveryExchange();
  if (exchange === undefined) return undefined;
  const discovery = new WorkerDiscovery({
    pool,
    sources: [new BrokerWorkers({ connection, exchange })],
    transportFor: (worker) => new GrpcTransport({ address: worker.address }),
    workerOptions: { slots },
  });
  await discovery.start();
  return discovery;
}
