import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../..", import.meta.url));

/** The first ```ts block after `heading` in README.md, its package imports pointed at src/ from test/<tmp>/. */
async function example(heading: string): Promise<string> {
  const readme = await readFile(join(root, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf(heading));
  const match = /```ts\n([\s\S]*?)```/.exec(section);
  if (!match?.[1]) throw new Error(`README.md has no ts example under ${heading}`);
  return match[1]
    .replaceAll('"@blacktree/orchestrator"', '"../../src/index.ts"')
    .replace(/"@blacktree\/orchestrator\/(\w+)"/g, (_, sub: string) => `"../../src/${sub === "grpc" ? "transport/grpc" : sub === "amqp" ? "queue/amqp" : sub}/index.ts"`);
}

describe("README", () => {
  // Inside the repo so the snippet resolves the same @types and tsconfig as our sources.
  let dir: string | undefined;
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("has a wiring example that compiles under the strict tsconfig and prints the job's result", async () => {
    dir = await mkdtemp(join(root, "test", ".readme-"));
    const file = join(dir, "wiring.ts");
    await writeFile(file, `${await example("## Wiring an orchestrator")}\nprocess.exit(0);\nexport {};\n`);
    await writeFile(
      join(dir, "tsconfig.json"),
      JSON.stringify({ extends: join(root, "tsconfig.json"), include: [file], compilerOptions: { rootDir: root } }),
    );
    await run(join(root, "node_modules/.bin/tsc"), ["--noEmit", "-p", join(dir, "tsconfig.json")], { cwd: root });
    const { stdout } = await run(process.execPath, ["--no-warnings", file], { cwd: root, timeout: 20_000 });
    expect(stdout.trim()).toBe("5");
  }, 60_000);

  it("has scheduling examples (priorities, affinity, rate limits) that compile and print what their comments say", async () => {
    dir ??= await mkdtemp(join(root, "test", ".readme-"));
    const files = { priorities: join(dir, "priorities.ts"), affinity: join(dir, "affinity.ts"), limits: join(dir, "limits.ts") };
    await writeFile(files.priorities, `${await example("### Priorities")}\nprocess.exit(0);\nexport {};\n`);
    await writeFile(files.affinity, `${await example("### Affinity")}\nprocess.exit(0);\nexport {};\n`);
    await writeFile(files.limits, `${await example("### Rate limits")}\nprocess.exit(0);\nexport {};\n`);
    const tsconfig = join(dir, "tsconfig.scheduling.json");
    await writeFile(tsconfig, JSON.stringify({ extends: join(root, "tsconfig.json"), include: Object.values(files), compilerOptions: { rootDir: root } }));
    await run(join(root, "node_modules/.bin/tsc"), ["--noEmit", "-p", tsconfig], { cwd: root });
    const priorities = await run(process.execPath, ["--no-warnings", files.priorities], { cwd: root, timeout: 20_000 });
    expect(priorities.stdout.trim()).toBe("nightly-1 hotfix nightly-2 nightly-3");
    const affinity = await run(process.execPath, ["--no-warnings", files.affinity], { cwd: root, timeout: 20_000 });
    expect(affinity.stdout.trim()).toBe("arm-2");
    const limits = await run(process.execPath, ["--no-warnings", files.limits], { cwd: root, timeout: 20_000 });
    expect(limits.stdout.trim()).toMatch(/^unschedulable rate limit `key:tenant:acme` \(1 per 60000 ms\): next start in \d+ ms$/);
  }, 180_000);

  it("has a recurring schedules example that compiles and prints what its comments say", async () => {
    dir ??= await mkdtemp(join(root, "test", ".readme-"));
    const file = join(dir, "schedules.ts");
    await writeFile(file, `${await example("### Recurring schedules")}\nprocess.exit(0);\nexport {};\n`);
    const tsconfig = join(dir, "tsconfig.schedules.json");
    await writeFile(tsconfig, JSON.stringify({ extends: join(root, "tsconfig.json"), include: [file], compilerOptions: { rootDir: root } }));
    await run(join(root, "node_modules/.bin/tsc"), ["--noEmit", "-p", tsconfig], { cwd: root });
    const { stdout } = await run(process.execPath, ["--no-warnings", file], { cwd: root, timeout: 20_000 });
    expect(stdout.trim().split("\n")).toEqual(["built main", "1"]);
  }, 120_000);

  it("has a console example that compiles and serves the page, read-only to a stranger and with actions to alice", async () => {
    dir ??= await mkdtemp(join(root, "test", ".readme-"));
    const file = join(dir, "console.ts");
    const shown = (await example("## Console")).replace("listen(8080", "listen(0");
    const probe = `
server.once("listening", async () => {
  const { port } = server.address() as import("node:net").AddressInfo;
  const base = \`http://127.0.0.1:\${port}/admin/jobs/\`;
  const page = await fetch(base);
  const session = async (headers: Record<string, string>) => ((await (await fetch(\`\${base}api/session\`, { headers })).json()) as { readOnly: boolean }).readOnly;
  console.log(JSON.stringify({ page: page.status, csp: page.headers.get("content-security-policy"), stranger: await session({}), alice: await session({ "x-user": "alice" }) }));
  process.exit(0);
});
export {};
`;
    await writeFile(file, shown + probe);
    await writeFile(join(dir, "tsconfig.console.json"), JSON.stringify({ extends: join(root, "tsconfig.json"), include: [file], compilerOptions: { rootDir: root } }));
    await run(join(root, "node_modules/.bin/tsc"), ["--noEmit", "-p", join(dir, "tsconfig.console.json")], { cwd: root });
    const { stdout } = await run(process.execPath, ["--no-warnings", file], { cwd: root, timeout: 30_000 });
    const seen = JSON.parse(stdout.trim().split("\n").at(-1) as string) as { page: number; csp: string; stranger: boolean; alice: boolean };
    expect(seen).toMatchObject({ page: 200, stranger: true, alice: false });
    expect(seen.csp).toContain("script-src 'self'");
  }, 60_000);

  it("shows test/cluster/handler-node-loss.test.ts as the example of testing a handler against a broker node loss", async () => {
    const readme = await readFile(join(root, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("## Testing handlers against broker failures"));
    const shown = /```ts\n([\s\S]*?)```/.exec(section)?.[1] ?? "";
    const file = await readFile(join(root, "test/cluster/handler-node-loss.test.ts"), "utf8");
    const body = (text: string) => text.split("\n").filter((line) => !line.startsWith("import ")).join("\n").trim();
    expect(body(shown)).toBe(body(file));
    // The README imports what the file imports, by the package's names.
    expect(shown).toContain('from "@blacktree/orchestrator/testing"');
    expect(file.match(/^import .*$/gm)?.length).toBe(shown.match(/^import .*$/gm)?.length);
  });

  it("has a concurrency keys example that compiles against the client's types", async () => {
    dir ??= await mkdtemp(join(root, "test", ".readme-"));
    const file = join(dir, "keys.ts");
    const prelude = [
      'import { JobClient, MemoryQueue } from "../../src/index.ts";',
      "const queue = new MemoryQueue();",
      "const client = new JobClient<{ deploy: { payload: { env: string }; result: void }; build: { payload: { ref: string }; result: void }; import: { payload: object; result: void } }>({ queue, events: queue });",
    ].join("\n");
    await writeFile(file, `${prelude}\n${await example("### Concurrency keys")}\nexport {};\n`);
    const config = join(dir, "tsconfig.keys.json");
    await writeFile(config, JSON.stringify({ extends: join(root, "tsconfig.json"), include: [file], compilerOptions: { rootDir: root } }));
    await run(join(root, "node_modules/.bin/tsc"), ["--noEmit", "-p", config], { cwd: root });
  }, 60_000);

  it("quick start holds exactly the two command lines", async () => {
    const readme = await readFile(join(root, "README.md"), "utf8");
    const block = /## Quick start\n\n```sh\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block?.trim().split("\n")).toEqual(["npm install && npm run demo", "npm test"]);
  });
});
