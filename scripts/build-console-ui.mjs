// Builds the console's web page into dist/console-ui/ (run by tsup's onSuccess, after the
// package's own build): src/console/ui/main.ts bundled for the browser with esbuild (which tsup
// itself runs on) into console.js, and index.html and console.css copied beside it. The
// console's handler serves these files from the package, so users need no build step.
import { copyFile, mkdir } from "node:fs/promises";
import { existsSync } from "node:fs";
import { build } from "esbuild";

const root = new URL("../", import.meta.url);
const source = new URL("src/console/ui/", root);
const out = new URL("dist/console-ui/", root);

if (!existsSync(new URL("index.html", source))) {
  console.log("console-ui: src/console/ui/index.html is missing; no page to build");
} else {
  await mkdir(out, { recursive: true });
  await build({
    entryPoints: [new URL("main.ts", source).pathname],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    sourcemap: true,
    outfile: new URL("console.js", out).pathname,
    logLevel: "warning",
  });
  for (const file of ["index.html", "console.css"]) await copyFile(new URL(file, source), new URL(file, out));
  console.log("console-ui: built dist/console-ui/");
}
