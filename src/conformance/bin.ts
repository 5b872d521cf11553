#!/usr/bin/env node
// The `blacktree-conformance` command (package.json "bin"); see cli.ts.
import { main } from "./cli.ts";

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(error);
    process.exitCode = 2;
  },
);
