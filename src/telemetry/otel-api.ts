import { createRequire } from "node:module";
import type * as OtelApi from "@opentelemetry/api";

/**
 * `@opentelemetry/api`, loaded on first use and only if the host installed it (it is an optional
 * peer dependency): this module never imports it statically, so the package loads, and every
 * telemetry call is a no-op, without it. `require` works from both builds: the API keeps its
 * registered providers in a process-wide global, so the copy `require` finds shares them with
 * the one the host `import`s.
 * @internal
 */
export type Api = typeof OtelApi;

let loaded: Api | null | undefined;

/** The API, or undefined when it is not installed (or is older than 1.9: no `span.addLink`). */
export function otelApi(): Api | undefined {
  if (loaded === undefined) loaded = load();
  return loaded ?? undefined;
}

function load(): Api | null {
  try {
    // The CJS build has __filename; the ESM build has import.meta.url (esbuild empties it in CJS).
    const base = typeof __filename === "string" ? __filename : import.meta.url;
    const api = createRequire(base)("@opentelemetry/api") as Api;
    return typeof api?.trace?.getTracer === "function" && typeof api.context?.active === "function" ? api : null;
  } catch {
    return null;
  }
}
