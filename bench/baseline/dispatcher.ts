/**
 * Baseline (a) dispatcher process, written by hand with no framework: an amqplib consumer with
 * prefetch = total slots → one grpc-js unary call per job, round-robin over workers with a free
 * slot → ack on reply.
 * Args: --ports p1,p2,… --slots N (per worker)
 */
import * as grpc from "@grpc/grpc-js";
import { connect, type ConsumeMessage } from "amqplib";
import { childArgs, serveChild, signalFatal, signalReady } from "../lib/child.ts";
import { nowMs } from "../lib/cpu.ts";
import { AMQP_URL } from "../lib/rabbit.ts";
import { WorkerClient } from "./service.ts";

interface RunClient {
  run(request: Buffer, options: grpc.CallOptions, callback: (err: grpc.ServiceError | null, reply?: Buffer) => void): void;
  close(): void;
}

interface Worker {
  client: RunClient;
  busy: number;
}

const args = childArgs();
const slots = Number(args.slots ?? 16);
const workers: Worker[] = (args.ports ?? "").split(",").filter(Boolean).map((port) => ({
  client: new WorkerClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as RunClient,
  busy: 0,
}));
const totalSlots = workers.length * slots;

let next = 0;
const waiting: ConsumeMessage[] = [];
let acked = 0;
let failed = 0;
/** Of `stamp` jobs (latency runs): publish → handler start, and publish → ack, in ms. */
let dispatchMs: number[] = [];
let ackMs: number[] = [];
let target: { count: number; firstDeliveryAt: number | null; lastAckAt: number; resolve: (v: unknown) => void } | undefined;

try {
  // TCP_NODELAY as the product's AmqpConnection sets it, so the two differ by code, not by a socket flag.
  const connection = await connect(AMQP_URL, { noDelay: true });
  connection.on("error", () => {});
  const channel = await connection.createChannel();
  channel.on("error", (err) => signalFatal(err));
  await channel.prefetch(totalSlots);

  const pick = (): Worker | undefined => {
    for (let i = 0; i < workers.length; i++) {
      const w = workers[(next + i) % workers.length]!;
      if (w.busy < slots) {
        next = (next + i + 1) % workers.length;
        return w;
      }
    }
    return undefined;
  };

  const dispatch = (worker: Worker, message: ConsumeMessage): void => {
    const job = JSON.parse(message.content.toString("utf8")) as { id: string; type: string; payload: { enqueuedAt?: number } | null; attempt: number; timeoutMs: number };
    const deadline = Date.now() + job.timeoutMs;
    const request = Buffer.from(JSON.stringify({ id: job.id, type: job.type, payload: job.payload, attempt: job.attempt, deadline }));
    worker.busy++;
    worker.client.run(request, { deadline }, (err, reply) => {
      worker.busy--;
      if (err || !reply) {
        failed++;
        channel.nack(message, false, true);
      } else {
        const answer = JSON.parse(reply.toString("utf8")) as { result?: { startedAt?: number } | null };
        channel.ack(message);
        acked++;
        const enqueuedAt = job.payload?.enqueuedAt;
        const startedAt = answer.result?.startedAt;
        if (typeof enqueuedAt === "number" && typeof startedAt === "number") {
          dispatchMs.push(startedAt - enqueuedAt);
          ackMs.push(nowMs() - enqueuedAt);
        }
        if (target) {
          target.lastAckAt = nowMs();
          if (--target.count === 0) {
            const t = target;
            target = undefined;
            t.resolve({ firstDeliveryAt: t.firstDeliveryAt, lastAckAt: t.lastAckAt });
          }
        }
      }
      const queued = waiting.shift();
      if (queued) dispatch(pick()!, queued);
    });
  };

  const onMessage = (message: ConsumeMessage | null): void => {
    if (!message) return;
    if (target && target.firstDeliveryAt === null) target.firstDeliveryAt = nowMs();
    const worker = pick();
    if (worker) dispatch(worker, message);
    else waiting.push(message);
  };

  serveChild(
    {
      consume: async ({ queue }: { queue: string }) => {
        await channel.consume(queue, onMessage, { noAck: false });
        return { prefetch: totalSlots };
      },
      // Resolves once `count` more jobs were acked, with the time of the first delivery and last ack.
      expect: ({ count }: { count: number }) =>
        new Promise((resolve) => {
          target = { count, firstDeliveryAt: null, lastAckAt: 0, resolve };
        }),
      stats: () => ({ acked, failed, waiting: waiting.length }),
      // The latencies of the `stamp` jobs acked since the last call.
      latencies: () => {
        const out = { dispatchMs, ackMs };
        dispatchMs = [];
        ackMs = [];
        return out;
      },
    },
    {
      onExit: async () => {
        for (const w of workers) w.client.close();
        await connection.close().catch(() => {});
      },
    },
  );
  signalReady({ prefetch: totalSlots });
} catch (err) {
  signalFatal(err);
}
