import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../..", import.meta.url));

describe("README: Delayed jobs", () => {
  let dir: string | undefined;
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("has an example that compiles under the strict tsconfig and prints what it says", async () => {
    const readme = await readFile(join(root, "README.md"), "utf8");
    const snippet = /```ts\n([\s\S]*?)```/.exec(readme.slice(readme.indexOf("### Delayed jobs")))?.[1];
    expect(snippet).toBeDefined();
    dir = await mkdtemp(join(root, "test", ".readme-delayed-"));
    const file = join(dir, "delayed.ts");
    const prelude = [
      'import { JobClient, MemoryQueue, OrchestratorError } from "../../src/index.ts";',
      "const queue = new MemoryQueue();",
      "const client = new JobClient<{ deploy: { payload: { env: string }; result: void } }>({ queue, events: queue });",
    ].join("\n");
    // What the README says of the cancelled job, checked after it.
    const after = 'const error = await check.result().catch((e: unknown) => e);\nconsole.log(error instanceof OrchestratorError && error.code);\nprocess.exit(0);';
    await writeFile(file, `${prelude}\n${snippet}\n${after}\nexport {};\n`);
    const config = join(dir, "tsconfig.json");
    await writeFile(config, JSON.stringify({ extends: join(root, "tsconfig.json"), include: [file], compilerOptions: { rootDir: root } }));
    await run(join(root, "node_modules/.bin/tsc"), ["--noEmit", "-p", config], { cwd: root });
    const { stdout } = await run(process.execPath, ["--no-warnings", file], { cwd: root, timeout: 20_000 });
    expect(stdout.trim().split("\n")).toEqual(["scheduled true", "canceled"]);
  }, 60_000);
});
