import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const example = fileURLToPath(new URL("../../examples/observability.ts", import.meta.url));
const sourceImports = fileURLToPath(new URL("../../scripts/source-imports.mjs", import.meta.url));

describe("examples/observability.ts", () => {
  it("prints one job's span tree from the API request to the handler's own span, then the Prometheus figures", { timeout: 30_000 }, async () => {
    const { stdout } = await run(process.execPath, ["--no-warnings", "--import", sourceImports, example], { timeout: 25_000 });
    const tree = stdout.split("\n").filter((line) => /\[(internal|server|client|producer|consumer)\]/.test(line)).map((line) => line.replace(/ [\d.]+ ms.*$/, ""));
    expect(tree).toEqual([
      "POST /builds [internal]",
      "  └─ send jobs [producer]",
      "    └─ process jobs [consumer]",
      "      └─ execute build [client]",
      "        └─ handle build [server]",
      "          └─ docker build [internal]",
    ]);
    expect(stdout).toContain('blacktree_job_duration_seconds_count{blacktree_job_outcome="completed",blacktree_job_type="build"} 1');
    expect(stdout).toMatch(/messaging_client_sent_messages_total\{[^}]*\} 1/);
  });
});
