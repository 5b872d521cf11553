/**
 * Baseline (a) worker process: a grpc-js server on 127.0.0.1 running a no-op handler per unary
 * call (`stamp` jobs reply with the time their handler started), refusing calls beyond its slots.
 * Args: --slots N
 */
import * as grpc from "@grpc/grpc-js";
import { childArgs, serveChild, signalFatal, signalReady } from "../lib/child.ts";
import { nowMs } from "../lib/cpu.ts";
import { workerService } from "./service.ts";

const slots = Number(childArgs().slots ?? 16);
let running = 0;
let completed = 0;
let overSlots = 0;

async function noop(_payload: unknown): Promise<unknown> {
  return null;
}

/** The `stamp` job of the latency runs: the time (epoch ms, sub-ms) its handler started. */
async function stamp(): Promise<unknown> {
  return { startedAt: nowMs() };
}

const server = new grpc.Server();
server.addService(workerService, {
  run: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
    if (running >= slots) {
      overSlots++;
      callback({ code: grpc.status.RESOURCE_EXHAUSTED, details: `all ${slots} slots busy` });
      return;
    }
    running++;
    const job = JSON.parse(call.request.toString("utf8")) as { id: string; type: string; payload: unknown };
    (job.type === "stamp" ? stamp() : noop(job.payload)).then(
      (result) => {
        running--;
        completed++;
        callback(null, Buffer.from(JSON.stringify({ id: job.id, status: "completed", result })));
      },
      (err: unknown) => {
        running--;
        callback(null, Buffer.from(JSON.stringify({ id: job.id, status: "failed", error: String(err) })));
      },
    );
  },
});

server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    signalFatal(err);
    return;
  }
  serveChild(
    { stats: () => ({ completed, overSlots }) },
    { onExit: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())) },
  );
  signalReady({ port });
});
