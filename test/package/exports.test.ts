import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../..", import.meta.url));
const subpaths = ["", "/worker", "/grpc", "/amqp", "/postgres", "/testing", "/console"] as const;

// The built package, as a user gets it: `npm test` builds before this project runs.
// Loading it through its own name resolves the exports map exactly as a dependant would.
async function load(kind: "import" | "require", specifier: string): Promise<string[]> {
  const script =
    kind === "import"
      ? `import(${JSON.stringify(specifier)}).then((m) => console.log(JSON.stringify(Object.keys(m).sort())))`
      : `console.log(JSON.stringify(Object.keys(require(${JSON.stringify(specifier)})).sort()))`;
  const { stdout } = await run(process.execPath, ["-e", script], { cwd: root });
  return JSON.parse(stdout) as string[];
}

describe("the built package", () => {
  it("has been built (npm test runs the build first)", () => {
    expect(existsSync(`${root}/dist/index.js`), "run `npm run build` first").toBe(true);
  });

  for (const subpath of subpaths) {
    const specifier = `@blacktree/orchestrator${subpath}`;
    it(`loads ${specifier} with import and with require, exposing the same names`, async () => {
      const esm = await load("import", specifier);
      const cjs = await load("require", specifier);
      expect(esm.length).toBeGreaterThan(0);
      expect(cjs.filter((name) => name !== "default" && name !== "__esModule")).toEqual(esm.filter((name) => name !== "default"));
    });
  }

  it("keeps OrchestratorError instanceof working between the ESM and CJS copies", async () => {
    const script = `
      const cjs = require("@blacktree/orchestrator");
      import("@blacktree/orchestrator").then((esm) => {
        const err = new cjs.OrchestratorError("canceled", "x");
        console.log(String(err instanceof esm.OrchestratorError && err.code === "canceled"));
      });`;
    const { stdout } = await run(process.execPath, ["-e", script], { cwd: root });
    expect(stdout.trim()).toBe("true");
  });
});
