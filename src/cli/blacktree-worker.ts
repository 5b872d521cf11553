#!/usr/bin/env node
// The `blacktree-worker` command (package.json `bin`); see `blacktree-worker --help`.
import { runWorkerCommand } from "./worker-command.ts";

void runWorkerCommand(process.argv.slice(2), process.env, {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  exit: (code) => {
    process.exitCode = code;
    // Let stdout and stderr flush before the process goes.
    setImmediate(() => process.exit(code));
  },
});
