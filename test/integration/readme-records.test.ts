import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { usePostgres } from "../helpers/postgres.ts";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../..", import.meta.url));
const sourceImports = join(root, "scripts", "source-imports.mjs");
const postgres = await usePostgres();

/** The ```ts block of README.md's "## Following jobs from any process" section. */
async function block(): Promise<string> {
  const readme = await readFile(join(root, "README.md"), "utf8");
  const start = readme.indexOf("## Following jobs from any process");
  const section = readme.slice(start, readme.indexOf("\n## ", start + 1));
  const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  if (code === undefined) throw new Error("README.md has no ts block under Following jobs from any process");
  return code;
}

describe.skipIf(!postgres.available)("README: Following jobs from any process", () => {
  let dir: string | undefined;
  afterAll(async () => {
    await postgres.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("compiles as written, and runs on PostgreSQL: the reader gets the result, the state and the attempts", async () => {
    dir = await mkdtemp(join(root, "test", ".readme-records-"));
    const file = join(dir, "records.ts");
    await writeFile(file, `${await block()}\nexport {};\n`);
    await writeFile(join(dir, "tsconfig.json"), JSON.stringify({ extends: join(root, "tsconfig.json"), include: [file], compilerOptions: { rootDir: root } }));
    await run(join(root, "node_modules/.bin/tsc"), ["--noEmit", "-p", join(dir, "tsconfig.json")], { cwd: root }).catch((error: { stdout?: string }) => {
      throw new Error(`the README's block does not compile:\n${error.stdout ?? String(error)}`);
    });
    const env = { ...process.env, DATABASE_URL: postgres.url, JOB_SCHEMA: postgres.schemaName() };
    const { stdout } = await run(process.execPath, ["--no-warnings", "--import", sourceImports, file], { cwd: root, env, timeout: 60_000 });
    expect(stdout.trim().split("\n")).toEqual(["{ width: 256 } completed", "[ 1 ]"]);
  }, 90_000);
});
