/**
 * A worker that runs `docker build` jobs (job type "docker.build").
 *
 * Run it (needs the Docker CLI and a reachable daemon, or the job fails with a clear message):
 *
 *   node examples/docker-build-worker.ts --port 50051 [--host 0.0.0.0] [--slots 2] [--token secret]
 *
 * It listens on 127.0.0.1 unless told otherwise: a build runs whatever its Dockerfile says, so
 * expose it only with `--token` (or TLS, see `serveWorker`'s `tls` option). Ctrl-C or SIGTERM stops
 * it gracefully: running builds get 30 s to finish, then their process groups are killed.
 * `grpc_health_probe -addr=127.0.0.1:50051` answers SERVING while it takes jobs.
 *
 * Submit a job to it from an orchestrator:
 *
 *   import { Dispatcher, JobClient, MemoryQueue, WorkerPool } from "@blacktree/orchestrator";
 *   import { GrpcTransport } from "@blacktree/orchestrator/grpc";
 *
 *   const queue = new MemoryQueue(); // or an AmqpQueue shared with other processes
 *   const pool = new WorkerPool();
 *   pool.add({ id: "docker-1", slots: 2, jobTypes: ["docker.build"], transport: new GrpcTransport({ address: "127.0.0.1:50051" }) });
 *   const dispatcher = new Dispatcher({ queue, events: queue, pool });
 *   await dispatcher.start();
 *   const client = new JobClient({ queue, events: queue });
 *   const handle = await client.submit({ type: "docker.build", payload: { context: "/srv/app", tag: "app:dev" }, timeoutMs: 600_000 });
 *   handle.on("log", ({ line }) => console.log(line));           // the build output, line by line
 *   handle.on("progress", ({ progress, message }) => console.log(progress, message)); // per build step
 *   console.log(await handle.result()); // { tag: "app:dev", imageId: "sha256:…", durationMs: … }
 *
 * Payload: { context, tag, dockerfile?, buildArgs?, target?, platform?, noCache? } (see DockerBuildPayload).
 *
 * It imports the package by name, as an app does: copy it into a project that depends on
 * @blacktree/orchestrator and run it with `node` (22.18+, which runs TypeScript). In this
 * repository, add `--import ./scripts/source-imports.mjs` to run it against the sources.
 */
import { parseArgs } from "node:util";
import { createDockerBuildHandler, serveWorker } from "@blacktree/orchestrator/worker";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "50051" },
    host: { type: "string", default: "127.0.0.1" },
    slots: { type: "string", default: "1" },
    token: { type: "string" },
  },
});

const worker = await serveWorker({
  handlers: { "docker.build": createDockerBuildHandler() },
  port: Number(values.port),
  host: values.host,
  slots: Number(values.slots),
  labels: { docker: "true" },
  ...(values.token === undefined ? {} : { auth: { token: values.token } }),
});
console.log(`docker-build worker listening on ${worker.address} (job type "docker.build", ${values.slots} slot(s))`);
