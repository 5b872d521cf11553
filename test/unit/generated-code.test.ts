import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("../..", import.meta.url));
const bin = join(root, "node_modules", ".bin");

async function files(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    out.set(relative(dir, path), await readFile(path, "utf8"));
  }
  return out;
}

describe("generated protobuf code", () => {
  let scratch: string;
  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), "blacktree-buf-"));
  });
  afterAll(() => rm(scratch, { recursive: true, force: true }));

  it("in src/gen is what `npm run generate` makes of proto/ (regenerate and commit when this fails)", async () => {
    // The same buf.gen.yaml, written under a scratch dir; the local protoc-gen-es comes from node_modules/.bin.
    await promisify(execFile)(join(bin, "buf"), ["generate", "--output", scratch], {
      cwd: root,
      env: { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ""}` },
      timeout: 30_000,
    });
    const fresh = await files(join(scratch, "src", "gen"));
    const committed = await files(join(root, "src", "gen"));
    expect([...committed.keys()].sort()).toEqual([...fresh.keys()].sort());
    for (const [path, text] of fresh) expect(committed.get(path), `src/gen/${path} is stale`).toBe(text);
  }, 30_000);
});
