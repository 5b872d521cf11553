import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { runConformance } from "./checks.ts";

/**
 * `blacktree-conformance <address> [--ca ca.pem [--cert client.pem --key client.key]] [--token T] [--timeout-ms N]`:
 * runs the protocol's checks (docs/protocol.md) against a worker and prints one line per check.
 * Exit code 0 when every check passed, 1 when one failed, 2 for bad arguments.
 */
export async function main(argv: readonly string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: { ca: { type: "string" }, cert: { type: "string" }, key: { type: "string" }, token: { type: "string" }, "timeout-ms": { type: "string" }, help: { type: "boolean" } },
    });
  } catch (error) {
    console.error((error as Error).message);
    return 2;
  }
  const { values, positionals } = parsed;
  const address = positionals[0];
  if (values.help || address === undefined || positionals.length > 1) {
    console.error("usage: blacktree-conformance <host:port> [--ca ca.pem] [--cert client.pem --key client.key] [--token T] [--timeout-ms 10000]");
    return 2;
  }
  const tls = values.ca === undefined
    ? undefined
    : { ca: readFileSync(values.ca), ...(values.cert ? { cert: readFileSync(values.cert) } : {}), ...(values.key ? { key: readFileSync(values.key) } : {}) };
  const timeoutMs = values["timeout-ms"] === undefined ? undefined : Number(values["timeout-ms"]);
  console.log(`blacktree-conformance: checking the worker at ${address}`);
  const results = await runConformance(address, { ...(tls ? { tls } : {}), ...(values.token ? { token: values.token } : {}), ...(timeoutMs ? { timeoutMs } : {}) }, (result) => {
    console.log(`${result.ok ? "pass" : "FAIL"}  ${result.name}: ${result.detail}`);
  });
  const failed = results.filter((result) => !result.ok).length;
  console.log(failed === 0 ? `all ${results.length} checks passed` : `${failed} of ${results.length} checks failed`);
  return failed === 0 ? 0 : 1;
}
