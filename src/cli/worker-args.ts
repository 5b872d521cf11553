import { parseArgs } from "node:util";

/**
 * The options of `blacktree-worker`, from its flags and `BLACKTREE_*` environment variables
 * (a flag wins over its variable).
 * @internal
 */

/** What `blacktree-worker` was asked to do. */
export interface WorkerCommandOptions {
  /** Built-in handler names (`shell`, `image-build`) and handler module paths, in order. */
  handlers: string[];
  port: number;
  host: string;
  id: string | undefined;
  slots: number;
  labels: Record<string, string>;
  announce: string | undefined;
  advertise: string | undefined;
  announceIntervalMs: number;
  announceExchange: string | undefined;
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  tlsCa: string | undefined;
  token: string | undefined;
  gracePeriodMs: number;
  logFormat: "text" | "json";
  imageEngine: "auto" | "docker" | "podman" | "buildah";
}

/** A command line that cannot be run: one line to print, then exit with status 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Each flag: its kind, its environment variable and its help line. */
const flags = {
  handlers: { type: "string", env: "BLACKTREE_HANDLERS", arg: "<list>", help: "handlers: built-ins `shell`, `image-build` and/or paths of modules exporting handlers, comma-separated (required)" },
  port: { type: "string", env: "BLACKTREE_PORT", arg: "<n>", help: "port to listen on; 0 picks a free one (default 50051)" },
  host: { type: "string", env: "BLACKTREE_HOST", arg: "<addr>", help: "interface to listen on (default 0.0.0.0)" },
  id: { type: "string", env: "BLACKTREE_ID", arg: "<id>", help: "the worker's id, stable across restarts (default <hostname>:<port>)" },
  slots: { type: "string", env: "BLACKTREE_SLOTS", arg: "<n>", help: "jobs run at once (default 1)" },
  labels: { type: "string", env: "BLACKTREE_LABELS", arg: "<k=v,...>", help: "labels the worker announces, e.g. zone=eu,gpu=a100" },
  announce: { type: "string", env: "BLACKTREE_ANNOUNCE", arg: "<amqp-url>", help: "announce this worker through RabbitMQ so orchestrators find it (heartbeats, goodbye on shutdown)" },
  advertise: { type: "string", env: "BLACKTREE_ADVERTISE", arg: "<host[:port]>", help: "address orchestrators reach this worker at; without a port, the one it listens on (default <hostname>)" },
  "announce-exchange": { type: "string", env: "BLACKTREE_ANNOUNCE_EXCHANGE", arg: "<name>", help: "fanout exchange of the announcements (default blacktree.workers)" },
  "announce-interval-ms": { type: "string", env: "BLACKTREE_ANNOUNCE_INTERVAL_MS", arg: "<ms>", help: "milliseconds between heartbeats (default 2000)" },
  "tls-cert": { type: "string", env: "BLACKTREE_TLS_CERT", arg: "<file>", help: "PEM certificate chain: serve TLS" },
  "tls-key": { type: "string", env: "BLACKTREE_TLS_KEY", arg: "<file>", help: "PEM private key of --tls-cert" },
  "tls-ca": { type: "string", env: "BLACKTREE_TLS_CA", arg: "<file>", help: "PEM CA bundle: require client certificates it signed (mutual TLS)" },
  token: { type: "string", env: "BLACKTREE_TOKEN", arg: "<token>", help: "bearer token orchestrators must send" },
  "grace-period-ms": { type: "string", env: "BLACKTREE_GRACE_PERIOD_MS", arg: "<ms>", help: "on SIGTERM/SIGINT, how long running jobs may finish (default 30000)" },
  "log-format": { type: "string", env: "BLACKTREE_LOG_FORMAT", arg: "text|json", help: "log lines as text or JSON (default text)" },
  "image-engine": { type: "string", env: "BLACKTREE_IMAGE_ENGINE", arg: "<engine>", help: "engine of the image-build handler: auto, docker, podman, buildah (default auto)" },
  help: { type: "boolean", short: "h", help: "print this help and exit" },
  version: { type: "boolean", help: "print the version and exit" },
} as const;

type FlagName = keyof typeof flags;

/** The `--help` text. */
export function helpText(): string {
  const lines = ["Usage: blacktree-worker --handlers <list> [options]", "", "Runs a Blacktree worker: a gRPC server that runs jobs for orchestrators.", "", "Options (each also as the environment variable shown):"];
  for (const [name, flag] of Object.entries(flags)) {
    const left = `  --${name}${"arg" in flag ? ` ${flag.arg}` : ""}`;
    lines.push(`${left.padEnd(36)} ${flag.help}${"env" in flag ? ` [${flag.env}]` : ""}`);
  }
  lines.push("", "Examples:", "  npx blacktree-worker --handlers shell --port 50051 --slots 4", "  npx blacktree-worker --handlers ./handlers.js,image-build --announce amqp://rabbit --advertise 10.0.0.7:50051");
  return lines.join("\n");
}

/**
 * Reads the command line and the environment.
 * @returns `"help"` / `"version"` when asked for, else the options.
 * @throws {UsageError} naming the bad flag or variable and what it expects.
 */
export function parseWorkerArgs(argv: readonly string[], env: NodeJS.ProcessEnv): WorkerCommandOptions | "help" | "version" {
  let values: Record<string, string | boolean | undefined>;
  try {
    const options = Object.fromEntries(Object.entries(flags).map(([name, flag]) => [name, "short" in flag ? { type: flag.type, short: flag.short } : { type: flag.type }]));
    ({ values } = parseArgs({ args: [...argv], options: options as never, strict: true, allowPositionals: false }) as { values: Record<string, string | boolean | undefined> });
  } catch (error) {
    throw new UsageError((error as Error).message.split("\n")[0]?.replace(/\. To specify.*$/, "") ?? String(error));
  }
  if (values.help) return "help";
  if (values.version) return "version";
  const read = (name: FlagName): { value: string; from: string } | undefined => {
    const flag = flags[name];
    const given = values[name];
    if (typeof given === "string") return { value: given, from: `--${name}` };
    const fromEnv = "env" in flag ? env[flag.env] : undefined;
    if (fromEnv !== undefined && fromEnv !== "") return { value: fromEnv, from: "env" in flag ? flag.env : name };
    return undefined;
  };
  const integer = (name: FlagName, fallback: number, min: number, max: number): number => {
    const v = read(name);
    if (v === undefined) return fallback;
    const n = Number(v.value);
    if (!/^\d+$/.test(v.value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`${v.from} expects an integer from ${min} to ${max}, got "${v.value}"`);
    return n;
  };
  const oneOf = <T extends string>(name: FlagName, allowed: readonly T[], fallback: T): T => {
    const v = read(name);
    if (v === undefined) return fallback;
    if (!allowed.includes(v.value as T)) throw new UsageError(`${v.from} expects one of ${allowed.join(", ")}, got "${v.value}"`);
    return v.value as T;
  };

  const handlersValue = read("handlers");
  if (handlersValue === undefined) throw new UsageError("--handlers is required: built-ins `shell`, `image-build`, or the path of a module exporting handlers");
  const handlers = handlersValue.value.split(",").map((entry) => entry.trim()).filter((entry) => entry !== "");
  if (handlers.length === 0) throw new UsageError(`${handlersValue.from} expects at least one handler, got "${handlersValue.value}"`);

  const labels: Record<string, string> = {};
  const labelsValue = read("labels");
  if (labelsValue !== undefined) {
    for (const pair of labelsValue.value.split(",").filter((entry) => entry.trim() !== "")) {
      const at = pair.indexOf("=");
      const key = pair.slice(0, at).trim();
      if (at <= 0 || key === "") throw new UsageError(`${labelsValue.from} expects k=v pairs separated by commas, got "${pair}"`);
      labels[key] = pair.slice(at + 1).trim();
    }
  }
  const announce = read("announce");
  if (announce !== undefined && !/^amqps?:\/\//.test(announce.value)) throw new UsageError(`${announce.from} expects an amqp:// or amqps:// URL, got "${announce.value.replace(/\/\/[^@/]*@/, "//…@")}"`);
  const advertise = read("advertise");
  if (advertise !== undefined && !/^(?:\[[0-9a-fA-F:.]+\]|[^\s:[\]]+)(?::\d{1,5})?$/.test(advertise.value)) throw new UsageError(`${advertise.from} expects host or host:port, got "${advertise.value}"`);
  const tlsCert = read("tls-cert")?.value;
  const tlsKey = read("tls-key")?.value;
  const tlsCa = read("tls-ca")?.value;
  if ((tlsCert === undefined) !== (tlsKey === undefined)) throw new UsageError("--tls-cert and --tls-key go together");
  if (tlsCa !== undefined && tlsCert === undefined) throw new UsageError("--tls-ca needs --tls-cert and --tls-key");

  return {
    handlers,
    port: integer("port", 50051, 0, 65535),
    host: read("host")?.value ?? "0.0.0.0",
    id: read("id")?.value,
    slots: integer("slots", 1, 1, 100_000),
    labels,
    announce: announce?.value,
    advertise: advertise?.value,
    announceIntervalMs: integer("announce-interval-ms", 2000, 10, 3_600_000),
    announceExchange: read("announce-exchange")?.value,
    tlsCert,
    tlsKey,
    tlsCa,
    token: read("token")?.value,
    gracePeriodMs: integer("grace-period-ms", 30_000, 0, 2 ** 31 - 1),
    logFormat: oneOf("log-format", ["text", "json"] as const, "text"),
    imageEngine: oneOf("image-engine", ["auto", "docker", "podman", "buildah"] as const, "auto"),
  };
}
