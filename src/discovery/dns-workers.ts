import { Resolver } from "node:dns/promises";
import { EventEmitter } from "eventemitter3";
import { invalidArgument, OrchestratorError } from "../errors.ts";
import { checkInteger, checkObject, checkString, optional } from "../validate.ts";
import type { DiscoveredWorker, WorkerSource, WorkerSourceEvents } from "./types.ts";

/** Which DNS records name the workers. */
export type DnsRecordType = "A" | "AAAA" | "SRV";

/** Options of {@link DnsWorkers}. */
export interface DnsWorkersOptions {
  /** The name to resolve: `workers.internal` (A/AAAA) or `_blacktree._tcp.workers.internal` (SRV). */
  name: string;
  /**
   * `SRV` records carry each worker's host and port; `A` / `AAAA` records carry addresses and
   * every worker listens on `port`.
   * @default "SRV" when `name` starts with `_`, else "A"
   */
  recordType?: DnsRecordType;
  /** The workers' port, for `A` / `AAAA` records (required for them). */
  port?: number;
  /**
   * How often the name is resolved again; workers whose records appeared are found, those whose
   * records are gone are lost (gracefully: their jobs may finish).
   * @default 30000
   */
  intervalMs?: number;
  /** DNS servers to ask (`"10.0.0.2"`, `"127.0.0.1:5353"`, `"[::1]:53"`). @default the system's */
  servers?: string[];
  /**
   * How long one lookup may take before it counts as failed (the workers found stay).
   * @default 5000
   */
  timeoutMs?: number;
}

/**
 * Workers named by DNS: a name resolving to many addresses (A/AAAA) or service records (SRV),
 * resolved again every `intervalMs`. A name that no longer resolves to anything (NXDOMAIN, no
 * records) loses every worker; a lookup that fails otherwise (timeout, SERVFAIL) changes nothing
 * and is reported as `error`.
 *
 * SRV targets are kept as host names (the transport resolves them when it connects); A/AAAA
 * workers get the address as their id (`10.0.0.7:50051`).
 *
 * @example
 * ```ts
 * new DnsWorkers({ name: "_blacktree._tcp.workers.svc.cluster.local", intervalMs: 10_000 });
 * new DnsWorkers({ name: "workers.internal", port: 50051 });
 * ```
 */
export class DnsWorkers extends EventEmitter<WorkerSourceEvents> implements WorkerSource {
  readonly #name: string;
  readonly #recordType: DnsRecordType;
  readonly #port: number | undefined;
  readonly #intervalMs: number;
  readonly #resolver: Resolver;
  /** Address → worker, as of the last successful lookup. */
  #found = new Map<string, DiscoveredWorker>();
  #timer: NodeJS.Timeout | undefined;
  #started: Promise<void> | undefined;
  #closed = false;

  /** @throws {OrchestratorError} `invalid_argument` for bad options. */
  constructor(options: DnsWorkersOptions) {
    super();
    const o = checkObject("options", options);
    this.#name = checkString("name", o.name, 253);
    this.#recordType = optional<DnsRecordType>(o.recordType, this.#name.startsWith("_") ? "SRV" : "A", (v) => {
      if (v !== "A" && v !== "AAAA" && v !== "SRV") throw invalidArgument("recordType", '"A", "AAAA" or "SRV"', v);
      return v;
    });
    this.#port = o.port === undefined ? undefined : checkInteger("port", o.port, 1, 65535);
    if (this.#recordType !== "SRV" && this.#port === undefined) throw invalidArgument("port", `the workers' port (required with ${this.#recordType} records)`, o.port);
    this.#intervalMs = optional(o.intervalMs, 30_000, (v) => checkInteger("intervalMs", v, 10, 2 ** 31 - 1));
    const timeoutMs = optional(o.timeoutMs, 5000, (v) => checkInteger("timeoutMs", v, 1, 2 ** 31 - 1));
    this.#resolver = new Resolver({ timeout: timeoutMs, tries: 1 });
    if (o.servers !== undefined) {
      if (!Array.isArray(o.servers) || o.servers.length === 0) throw invalidArgument("servers", "a non-empty array of DNS server addresses", o.servers);
      try {
        this.#resolver.setServers(o.servers.map((server: unknown, index: number) => checkString(`servers[${index}]`, server, 300)));
      } catch (error) {
        if (error instanceof OrchestratorError) throw error;
        throw invalidArgument("servers", "DNS server addresses such as 10.0.0.2 or 127.0.0.1:5353", o.servers);
      }
    }
  }

  /** The workers found by the last successful lookup. */
  get workers(): DiscoveredWorker[] {
    return [...this.#found.values()];
  }

  /** Resolves once after the first lookup (successful or not), then every `intervalMs`. Idempotent. */
  start(): Promise<void> {
    if (this.#closed) return Promise.reject(new OrchestratorError("precondition_failed", "the DNS source is closed"));
    this.#started ??= this.#tick();
    return this.#started;
  }

  /** Resolves the name now (also between intervals), and follows the change. */
  async refresh(): Promise<void> {
    let addresses: DiscoveredWorker[];
    try {
      addresses = await this.#lookup();
    } catch (error) {
      if (!this.#closed) this.emit("error", { error: error as OrchestratorError });
      return;
    }
    if (this.#closed) return;
    const next = new Map(addresses.map((worker) => [worker.address, worker] as const));
    const previous = this.#found;
    this.#found = next;
    for (const [address, worker] of previous) {
      if (!next.has(address)) this.emit("workerLost", { id: worker.id, reason: `its DNS record under ${this.#name} is gone`, graceful: true });
    }
    for (const [address, worker] of next) if (!previous.has(address)) this.emit("workerFound", { worker });
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#found.clear();
    this.#resolver.cancel();
  }

  async #tick(): Promise<void> {
    await this.refresh();
    if (this.#closed) return;
    this.#timer = setTimeout(() => void this.#tick(), this.#intervalMs);
    this.#timer.unref();
  }

  async #lookup(): Promise<DiscoveredWorker[]> {
    try {
      if (this.#recordType === "SRV") {
        const records = await this.#resolver.resolveSrv(this.#name);
        return records.map((record) => {
          const host = record.name.replace(/\.$/, "");
          const address = `${host.includes(":") ? `[${host}]` : host}:${record.port}`;
          return { id: address, address };
        });
      }
      const hosts = this.#recordType === "A" ? await this.#resolver.resolve4(this.#name) : await this.#resolver.resolve6(this.#name);
      return hosts.map((host) => {
        const address = `${host.includes(":") ? `[${host}]` : host}:${this.#port}`;
        return { id: address, address };
      });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      // The name exists no more, or has no such records: every worker it named is gone.
      if (code === "ENOTFOUND" || code === "ENODATA") return [];
      throw new OrchestratorError("unavailable", `resolving ${this.#recordType} ${this.#name} failed (${code ?? String(error)}); keeping the ${this.#found.size} workers found before`, {
        cause: error,
        details: { dnsCode: code },
      });
    }
  }
}
