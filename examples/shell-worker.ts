/**
 * A worker that runs commands (job type "shell").
 *
 * Run it:
 *
 *   node examples/shell-worker.ts --port 50052 [--allow make --allow npm] [--allow-shell] [--cwd /srv/work] [--token secret]
 *
 * Every job payload runs as a command on this machine, so it listens on 127.0.0.1 unless given
 * `--host`, and should then get `--token` (or TLS) and an `--allow` list of executables.
 * `--allow-shell` also accepts `command` as a string run by /bin/sh -c (refused otherwise).
 * Ctrl-C or SIGTERM stops it gracefully; a cancelled job's whole process group is killed.
 *
 * Submit a job to it from an orchestrator (see examples/docker-build-worker.ts for the setup):
 *
 *   pool.add({ id: "shell-1", jobTypes: ["shell"], transport: new GrpcTransport({ address: "127.0.0.1:50052" }) });
 *   const handle = await client.submit({ type: "shell", payload: { command: ["make", "test"], cwd: "repo", timeoutMs: 60_000 } });
 *   handle.on("log", ({ line, stream }) => console.log(stream, line));
 *   console.log(await handle.result()); // { exitCode: 0, durationMs: …, stdoutTail: [ … ] }
 *   await handle.cancel();             // or stop it: the handler's signal kills the command's process group
 *
 * Payload: { command: string[] | string, cwd?, env?, timeoutMs? } (see ShellPayload).
 *
 * It imports the package by name, as an app does: copy it into a project that depends on
 * @blacktree/orchestrator and run it with `node` (22.18+, which runs TypeScript). In this
 * repository, add `--import ./scripts/source-imports.mjs` to run it against the sources.
 */
import { parseArgs } from "node:util";
import { createShellHandler, serveWorker } from "@blacktree/orchestrator/worker";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "50052" },
    host: { type: "string", default: "127.0.0.1" },
    slots: { type: "string", default: "1" },
    token: { type: "string" },
    allow: { type: "string", multiple: true },
    "allow-shell": { type: "boolean", default: false },
    cwd: { type: "string" },
  },
});

const shell = createShellHandler({
  allowShell: values["allow-shell"],
  ...(values.allow === undefined ? {} : { allowedCommands: values.allow }),
  ...(values.cwd === undefined ? {} : { cwd: values.cwd }),
});
const worker = await serveWorker({
  handlers: { shell },
  port: Number(values.port),
  host: values.host,
  slots: Number(values.slots),
  ...(values.token === undefined ? {} : { auth: { token: values.token } }),
});
console.log(`shell worker listening on ${worker.address} (job type "shell", ${values.slots} slot(s))`);
