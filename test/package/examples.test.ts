import { execFile, spawn } from "node:child_process";
import { cp, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../../src/testing/wait-for.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../..", import.meta.url));
const rabbit = await useRabbitMq();

/**
 * Each example as a user gets it: the package packed with `npm pack` (the built dist, as
 * published), unpacked into the node_modules of a fresh project outside this repository, its
 * dependencies beside it (linked from ours: the same versions, no network), and the examples/
 * folder copied in unchanged. `npm test` builds before this project runs.
 */
describe("examples/, copied into a fresh project with the packed package installed", () => {
  let project = "";
  const node = (args: string[], timeout = 30_000) => run(process.execPath, ["--no-warnings", ...args], { cwd: project, timeout });

  beforeAll(async () => {
    project = await mkdtemp(join(tmpdir(), "blacktree-examples-"));
    const { stdout } = await run("npm", ["pack", "--silent", "--pack-destination", project], { cwd: root });
    const tarball = join(project, stdout.trim().split("\n").at(-1) as string);
    const modules = join(project, "node_modules");
    const installed = join(modules, "@blacktree", "orchestrator");
    await mkdir(installed, { recursive: true });
    await run("tar", ["-xzf", tarball, "-C", installed, "--strip-components=1"]);
    for (const entry of await readdir(join(root, "node_modules"))) {
      if (entry === ".bin" || entry === "@blacktree" || entry.startsWith(".")) continue;
      await symlink(join(root, "node_modules", entry), join(modules, entry));
    }
    await cp(join(installed, "examples"), project, { recursive: true });
    await writeFile(join(project, "package.json"), JSON.stringify({ name: "examples-app", private: true, type: "module" }));
    await writeFile(
      join(project, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2023",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          strict: true,
          noEmit: true,
          allowImportingTsExtensions: true,
          erasableSyntaxOnly: true,
          types: ["node"],
          skipLibCheck: true,
        },
        include: ["*.ts", "demo/*.ts"],
      }),
    );
  }, 120_000);

  afterAll(async () => {
    if (project) await rm(project, { recursive: true, force: true });
  });

  it("ships every example in the package, importing it by name only", async () => {
    const files = (await readdir(project, { recursive: true })).filter((f) => f.endsWith(".ts") && !f.startsWith("node_modules"));
    expect(files.sort()).toEqual((await readdir(join(root, "examples"), { recursive: true })).filter((f) => f.endsWith(".ts")).sort());
    for (const file of files) {
      const text = await readFile(join(project, file), "utf8");
      expect(text, file).not.toMatch(/from "\.\.\//);
    }
  });

  it("typechecks every example against the installed package's types", async () => {
    await run(join(root, "node_modules", ".bin", "tsc"), ["-p", project], { cwd: project, timeout: 120_000 }).catch((error: { stdout?: string }) => {
      throw new Error(`tsc failed:\n${error.stdout ?? String(error)}`);
    });
  }, 150_000);

  it("runs observability.ts: one job's span tree from the request to the handler", async () => {
    const { stdout } = await node(["observability.ts"]);
    expect(stdout).toContain("execute build [client]");
    expect(stdout).toContain("handle build [server]");
  }, 60_000);

  it("starts shell-worker.ts on a port of its own and serves until stopped", async () => {
    const child = spawn(process.execPath, ["--no-warnings", "shell-worker.ts", "--port", "0"], { cwd: project, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    try {
      await waitFor(() => /shell worker listening on 127\.0\.0\.1:\d+/.test(output), { timeoutMs: 30_000, what: `the worker to listen (output: ${output})` });
    } finally {
      child.kill("SIGTERM");
    }
  }, 60_000);

  it.skipIf(!rabbit.available)("runs rabbitmq.ts as an orchestrator and a producer that meet through RabbitMQ", async () => {
    const queue = rabbit.queueName("newcomer-examples");
    const env = { ...process.env, AMQP_URL: rabbit.url };
    const orchestrator = spawn(process.execPath, ["--no-warnings", "rabbitmq.ts", "orchestrator", "--queue", queue], { cwd: project, env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    orchestrator.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    orchestrator.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    try {
      await waitFor(() => output.includes("ready: consuming"), { timeoutMs: 30_000, what: "the orchestrator ready" });
      const { stdout } = await run(process.execPath, ["--no-warnings", "rabbitmq.ts", "producer", "--queue", queue, "--jobs", "2"], { cwd: project, env, timeout: 60_000 });
      expect([...stdout.matchAll(/submitted (\S+)/g)]).toHaveLength(2);
    } finally {
      orchestrator.kill("SIGTERM");
      await rabbit.cleanup();
    }
  }, 120_000);
});
