import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const runScript = fileURLToPath(new URL("../../bench/chaos/run.ts", import.meta.url));

/** Runs `npm run chaos` with `args` (this same node), bounded in time; resolves with its exit code and output. */
export function runChaos(args: string[], timeoutMs: number): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--no-warnings", runScript, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    // SIGTERM lets the run clean up (processes, broker objects); SIGKILL if it does not.
    const term = setTimeout(() => child.kill("SIGTERM"), timeoutMs);
    const kill = setTimeout(() => child.kill("SIGKILL"), timeoutMs + 20_000);
    child.once("exit", (code) => {
      clearTimeout(term);
      clearTimeout(kill);
      resolve({ code, output });
    });
  });
}
