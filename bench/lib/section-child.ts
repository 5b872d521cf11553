/**
 * A bench child that runs one exported measurement function of a module in a fresh process, so a
 * section measures with its own heap and JIT state (and `--expose-gc` when it needs it).
 * Args: --module <file URL> --fn <export name>
 */
import { childArgs, serveChild, signalFatal, signalReady } from "./child.ts";

const { module, fn } = childArgs();
try {
  const mod = (await import(module!)) as Record<string, unknown>;
  const measure = mod[fn!];
  if (typeof measure !== "function") throw new Error(`${module} has no function export ${fn}`);
  serveChild({ run: (args: unknown) => (measure as (a: unknown) => unknown)(args) });
  signalReady();
} catch (err) {
  signalFatal(err);
}
