import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../..", import.meta.url));

/**
 * What a user without OpenTelemetry runs: the dispatcher, a pool, a worker, a client, with a
 * logger and the Prometheus registry. Every telemetry call must be a no-op without the API, and
 * the figures must still reach the registry.
 */
const script = (load: string) => `
${load}
let apiFound = true;
try { require.resolve("@opentelemetry/api"); } catch { apiFound = false; }
const { Dispatcher, InProcessTransport, JobClient, MemoryQueue, PrometheusRegistry, WorkerPool } = lib;
(async () => {
  const registry = new PrometheusRegistry();
  const records = [];
  const logger = { debug: (o, m) => records.push(m), info: (o, m) => records.push(m), warn: (o, m) => records.push(m), error: (o, m) => records.push(m) };
  const telemetry = { registry };
  const queue = new MemoryQueue();
  const pool = new WorkerPool({ telemetry, logger });
  pool.add({ id: "w1", transport: new InProcessTransport({ handlers: { add: async ({ a, b }) => a + b } }), slots: 1 });
  const dispatcher = new Dispatcher({ queue, events: queue, pool, telemetry, logger });
  await dispatcher.start();
  const client = new JobClient({ queue, events: queue, telemetry, logger });
  const handle = await client.submit({ type: "add", payload: { a: 2, b: 3 } });
  const result = await handle.result({ timeoutMs: 10000 });
  await dispatcher.close();
  await client.close();
  await pool.close();
  await queue.close();
  const text = registry.metrics();
  console.log(JSON.stringify({
    apiFound,
    result,
    completed: /blacktree_job_duration_seconds_count\\{blacktree_job_outcome="completed",blacktree_job_type="add"\\} 1/.test(text),
    sent: /messaging_client_sent_messages_total\\{[^}]*\\} 1/.test(text),
    records: records.includes("job submitted") && records.includes("job completed"),
  }));
})().catch((error) => { console.error(error); process.exit(1); });
`;

describe("the packed package installed without OpenTelemetry", () => {
  const dir = mkdtempSync(join(tmpdir(), "blacktree-no-otel-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("installs with its optional peer absent and runs jobs, logs and Prometheus figures from ESM and CJS", { timeout: 240_000 }, async () => {
    await run("npm", ["pack", "--pack-destination", dir, "--silent"], { cwd: root });
    const tarball = readdirSync(dir).find((name) => name.endsWith(".tgz")) as string;
    const app = join(dir, "app");
    await run("mkdir", ["-p", app]);
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", version: "1.0.0", private: true }));
    await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts", join(dir, tarball)], { cwd: app });
    writeFileSync(join(app, "check.cjs"), script(`const lib = require("@blacktree/orchestrator");`));
    writeFileSync(join(app, "check.mjs"), script(`import { createRequire } from "node:module"; const require = createRequire(import.meta.url); const lib = await import("@blacktree/orchestrator");`));
    for (const file of ["check.cjs", "check.mjs"]) {
      const { stdout } = await run(process.execPath, [file], { cwd: app });
      expect(JSON.parse(stdout), file).toEqual({ apiFound: false, result: 5, completed: true, sent: true, records: true });
    }
  });
});
