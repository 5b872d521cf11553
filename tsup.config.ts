import { defineConfig } from "tsup";
import type { Options } from "tsup";
import { consolePageOptions } from "./scripts/console-page.ts";

type EsbuildPlugin = NonNullable<Options["esbuildPlugins"]>[number];

/**
 * vitest refuses require() (its CJS entry throws) and the ./testing contract suites import it.
 * The CJS build gets a stand-in that explains instead, so require("@blacktree/orchestrator/testing")
 * still loads the rest of the kit; the ESM build keeps vitest external. The suites run from ES
 * modules, which vitest test files are. (vitest is in `noExternal` only so that this plugin, not
 * tsup's own externals, decides.)
 */
const vitestOnlyForEsm: EsbuildPlugin = {
  name: "vitest-only-for-esm",
  setup(build) {
    const cjs = build.initialOptions.define?.TSUP_FORMAT === '"cjs"';
    build.onResolve({ filter: /^vitest$/ }, () =>
      cjs ? { path: `${import.meta.dirname}/src/testing/contracts/vitest-cjs-stand-in.ts` } : { path: "vitest", external: true },
    );
  },
};

/** The package: every entry for Node, ESM and CJS, with types. */
const nodeBuild: Options = {
  entry: {
    index: "src/index.ts",
    worker: "src/worker/index.ts",
    grpc: "src/transport/grpc/index.ts",
    amqp: "src/queue/amqp/index.ts",
    postgres: "src/store/postgres/index.ts",
    testing: "src/testing/index.ts",
    console: "src/console/index.ts",
    "bin/blacktree-worker": "src/cli/blacktree-worker.ts",
    "bin/blacktree-conformance": "src/conformance/bin.ts",
  },
  format: ["esm", "cjs"],
  dts: true,
  sourcemap: true,
  // dist/console-ui is the page's build (below), which runs beside this one: not ours to clean.
  clean: ["!console-ui/**"],
  target: "node22",
  platform: "node",
  splitting: true,
  treeshake: true,
  noExternal: ["vitest"],
  esbuildPlugins: [vitestOnlyForEsm],
};

/** The package, and the console's web page (scripts/console-page.ts) into dist/console-ui. */
export default defineConfig([nodeBuild, consolePageOptions()]);
