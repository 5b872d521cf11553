/**
 * Entry script of a worker process for the integration tests (see `worker-process.ts`):
 * `node worker-entry.ts '<json config>'` serves the handlers exported as `handlersExport` by
 * `handlersModule` with `serveWorker()` and prints `ready <port>` once it listens.
 */
import { pathToFileURL } from "node:url";
import { serveWorker } from "../../src/worker/index.ts";
import type { JobHandlers, ServeWorkerOptions } from "../../src/worker/index.ts";

interface EntryConfig {
  handlersModule: string;
  handlersExport: string;
  port: number;
  slots: number;
  labels: Record<string, string>;
  gracePeriodMs: number;
  token?: string;
}

const config = JSON.parse(process.argv[2] ?? "{}") as EntryConfig;
const module = (await import(pathToFileURL(config.handlersModule).href)) as Record<string, unknown>;
const handlers = module[config.handlersExport] as JobHandlers;
const options: ServeWorkerOptions = {
  handlers,
  host: "127.0.0.1",
  port: config.port,
  slots: config.slots,
  labels: config.labels,
  gracePeriodMs: config.gracePeriodMs,
  handleSignals: true,
};
if (config.token !== undefined) options.auth = { token: config.token };
const worker = await serveWorker(options);
process.stdout.write(`ready ${worker.port}\n`);
