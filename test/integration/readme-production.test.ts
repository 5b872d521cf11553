import { execFile, spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { waitFor } from "../../src/testing/wait-for.ts";
import { ensureTestCerts } from "../helpers/certs.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../..", import.meta.url));
/** Maps the package names the README imports to the sources, as for the examples. */
const sourceImports = join(root, "scripts", "source-imports.mjs");
const rabbit = await useRabbitMq();

/** The ```ts blocks of README.md's "## Production wiring" section, in order. */
async function productionBlocks(): Promise<string[]> {
  const readme = await readFile(join(root, "README.md"), "utf8");
  const start = readme.indexOf("## Production wiring");
  const section = readme.slice(start, readme.indexOf("\n## ", start + 1));
  return [...section.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1] as string);
}

describe.skipIf(!rabbit.available)("README: Production wiring", () => {
  let dir: string | undefined;
  afterAll(async () => {
    await rabbit.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("compiles both blocks as written, and they run: a TLS worker process and an orchestrator on RabbitMQ that gets the job's result", async () => {
    const [workerCode, orchestratorCode] = await productionBlocks();
    expect(workerCode).toBeDefined();
    expect(orchestratorCode).toBeDefined();
    // Inside the repo so the blocks resolve the same @types and tsconfig (paths) as our sources.
    dir = await mkdtemp(join(root, "test", ".readme-production-"));
    const workerFile = join(dir, "worker.ts");
    const orchestratorFile = join(dir, "orchestrator.ts");
    await writeFile(workerFile, `${workerCode}\nexport {};\n`);
    await writeFile(orchestratorFile, `${orchestratorCode}\nexport {};\n`);
    await writeFile(join(dir, "tsconfig.json"), JSON.stringify({ extends: join(root, "tsconfig.json"), include: [workerFile, orchestratorFile], compilerOptions: { rootDir: root } }));
    await run(join(root, "node_modules/.bin/tsc"), ["--noEmit", "-p", join(dir, "tsconfig.json")], { cwd: root }).catch((error: { stdout?: string }) => {
      throw new Error(`the README's blocks do not compile:\n${error.stdout ?? String(error)}`);
    });

    const certs = await ensureTestCerts();
    const env = { ...process.env, TLS_DIR: certs.dir, PORT: "0", AMQP_URL: rabbit.url, JOB_QUEUE: rabbit.queueName("newcomer-readme") };
    const worker = spawn(process.execPath, ["--no-warnings", "--import", sourceImports, workerFile], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
    let workerOutput = "";
    worker.stdout.on("data", (chunk: Buffer) => (workerOutput += chunk.toString()));
    worker.stderr.on("data", (chunk: Buffer) => (workerOutput += chunk.toString()));
    try {
      const address = await waitFor(() => /worker listening on (\S+)/.exec(workerOutput)?.[1], { timeoutMs: 30_000, what: `the worker to listen (${workerOutput})` });
      const { stdout } = await run(process.execPath, ["--no-warnings", "--import", sourceImports, orchestratorFile], {
        cwd: root,
        env: { ...env, WORKER_ADDRESS: address },
        timeout: 60_000,
      });
      expect(stdout.trim()).toBe("{ image: 'cat.png@256w' }");
    } finally {
      worker.kill("SIGTERM");
    }
  }, 120_000);
});
