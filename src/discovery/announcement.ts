import type { WorkerDescription } from "../transport/types.ts";

/**
 * The messages workers publish on the broker to announce themselves (`announceWorker()`) and
 * orchestrators read (`BrokerWorkers`): JSON on a fanout exchange, one per heartbeat.
 * @internal
 */

/** The fanout exchange announcements travel on, unless configured otherwise. */
export const DEFAULT_ANNOUNCE_EXCHANGE = "blacktree.workers";

/** One announcement: `alive` on start and every heartbeat, `goodbye` on a graceful shutdown. */
export interface Announcement {
  readonly v: 1;
  readonly kind: "alive" | "goodbye";
  /** The worker's own id (its description's `workerId`). */
  readonly id: string;
  /** `host:port` where orchestrators reach its gRPC server. */
  readonly address: string;
  /** Milliseconds between two heartbeats: silence for a few of them means it is gone. */
  readonly intervalMs: number;
  readonly description: WorkerDescription;
}

/** Parses an announcement; undefined for anything else (another publisher on the exchange, a newer version's message). */
export function parseAnnouncement(body: Buffer): Announcement | undefined {
  let value: unknown;
  try {
    value = JSON.parse(body.toString("utf8"));
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  const a = value as Record<string, unknown>;
  if (a.v !== 1 || (a.kind !== "alive" && a.kind !== "goodbye")) return undefined;
  if (typeof a.id !== "string" || a.id === "" || a.id.length > 256) return undefined;
  if (typeof a.address !== "string" || !/^(?:\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):\d{1,5}$/.test(a.address)) return undefined;
  if (typeof a.intervalMs !== "number" || !(a.intervalMs >= 10) || a.intervalMs > 3_600_000) return undefined;
  const d = a.description as Record<string, unknown> | undefined;
  if (typeof d !== "object" || d === null || typeof d.slots !== "number" || !Array.isArray(d.jobTypes) || typeof d.labels !== "object" || d.labels === null) return undefined;
  const labels: Record<string, string> = {};
  for (const [key, label] of Object.entries(d.labels as Record<string, unknown>)) if (typeof label === "string") labels[key] = label;
  const description: WorkerDescription = {
    slots: d.slots,
    labels,
    jobTypes: (d.jobTypes as unknown[]).filter((type): type is string => typeof type === "string"),
    version: typeof d.version === "string" ? d.version : "",
    ...(typeof d.workerId === "string" ? { workerId: d.workerId } : {}),
    ...(typeof d.protocol === "string" ? { protocol: d.protocol } : {}),
  };
  return { v: 1, kind: a.kind, id: a.id, address: a.address, intervalMs: a.intervalMs, description };
}
