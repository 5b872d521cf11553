// Lets the examples (which import the package by name, as an app does) run from this repository
// against the sources: `node --import ./scripts/source-imports.mjs examples/rabbitmq.ts`.
// Maps `@blacktree/orchestrator` and each subpath to the entry tsup builds it from (tsup.config.ts).
import { readFileSync } from "node:fs";
import { register } from "node:module";

const root = new URL("../", import.meta.url);
const config = readFileSync(new URL("tsup.config.ts", root), "utf8");
const entries = {};
for (const [, name, file] of config.matchAll(/^\s+(\w+): "(src\/[^"]+\.ts)",$/gm)) {
  entries[name === "index" ? "@blacktree/orchestrator" : `@blacktree/orchestrator/${name}`] = new URL(file, root).href;
}
register(new URL("./source-resolve.mjs", import.meta.url), { data: entries });
