/**
 * How the console's web page is built: the tsup options of its bundle (used by tsup.config.ts for
 * `npm run build`), and {@link buildConsolePage} for the browser tests, which serve the page
 * exactly as it ships (run from the sources, `createConsole()` bundles the page on the fly instead).
 *
 * The page is plain TypeScript modules (src/console/ui) bundled by esbuild (through tsup, the build
 * tool the package already has) into one IIFE script, beside a static index.html and one plain
 * stylesheet (copied as written: 9 KB, readable by whoever has to restyle it): no framework and no runtime dependency, nothing for the user to build, and nothing
 * inline, so it runs under the console's Content-Security-Policy (`script-src 'self'`,
 * `style-src 'self'`).
 */
import { copyFileSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Options } from "tsup";

const root = fileURLToPath(new URL("../", import.meta.url));

/**
 * Where the page's files land: `index.html`, `console.js` (+ its source map) and `console.css`,
 * beside the package's bundles, where `createConsole()` looks for them.
 */
export const CONSOLE_PAGE_DIR = `${root}dist/console-ui`;

/** The tsup options of the page's bundle, writing into `outDir`. */
export function consolePageOptions(outDir = CONSOLE_PAGE_DIR): Options {
  return {
    name: "console",
    entry: { console: `${root}src/console/ui/main.ts` },
    outDir,
    format: ["iife"],
    platform: "browser",
    target: ["chrome111", "firefox111", "safari16.4"],
    outExtension: () => ({ js: ".js" }),
    minify: true,
    sourcemap: true,
    dts: false,
    splitting: false,
    treeshake: true,
    clean: true,
    tsconfig: `${root}src/console/ui/tsconfig.json`,
    onSuccess: async () => {
      mkdirSync(outDir, { recursive: true });
      for (const file of ["index.html", "console.css"]) copyFileSync(`${root}src/console/ui/${file}`, `${outDir}/${file}`);
    },
  };
}

/** Builds the page into `outDir` (dist/console-ui by default) and resolves with that directory. */
export async function buildConsolePage(outDir = CONSOLE_PAGE_DIR): Promise<string> {
  const { build } = await import("tsup");
  await build({ ...consolePageOptions(outDir), config: false, silent: true });
  return outDir;
}
