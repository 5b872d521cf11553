/**
 * Child process of `bench/wire/wire.ts`: the worker side of every wire measured, in one process
 * so its CPU is read in one place. Serves a no-op handler with `serveWorker()` once per flush
 * mode, and a plain @grpc/grpc-js unary service (raw JSON bytes) as the baseline. Answers
 * `{ cmd: "cpu" }` over IPC with its CPU time in microseconds.
 */
import { Server, ServerCredentials } from "@grpc/grpc-js";
import type { sendUnaryData, ServerUnaryCall } from "@grpc/grpc-js";
import { serveWorker } from "../../src/worker/index.ts";

const identity = (b: Buffer) => b;
const unary = new Server();
unary.addService(
  { run: { path: "/bench.Unary/Run", requestStream: false, responseStream: false, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity } },
  {
    run(call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) {
      // The same work a worker does per job: parse the payload, run a no-op, encode the result.
      const payload = JSON.parse(call.request.toString()) as unknown;
      callback(null, Buffer.from(JSON.stringify({ ok: true, payload })));
    },
  },
);
const unaryPort = await new Promise<number>((resolve, reject) =>
  unary.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, port) => (error ? reject(error) : resolve(port))),
);

const handlers = { noop: (payload: unknown) => ({ ok: true, payload }) };
const workers: Record<string, number> = {};
for (const flushMode of ["immediate", "microtask", "none"] as const) {
  const worker = await serveWorker({ handlers, host: "127.0.0.1", slots: 4096, handleSignals: false, flushMode });
  workers[flushMode] = worker.port;
}

process.on("message", (message: { cmd: string; id: number }) => {
  if (message.cmd === "cpu") {
    const { user, system } = process.cpuUsage();
    process.send?.({ id: message.id, cpuUs: user + system });
  } else if (message.cmd === "exit") {
    process.exit(0);
  }
});
process.send?.({ ready: true, unaryPort, workers });
