import { OrchestratorError } from "../errors.ts";
import { checkFunction } from "../validate.ts";
import { Deque } from "./deque.ts";
import { checkCancelCommand, checkJobEvent, checkJobId } from "../job/event-checks.ts";
import type { CancelCommand, JobEvent } from "../job/types.ts";
import type { Subscription } from "./types.ts";

interface Listener<T> {
  readonly fn: (value: T) => void;
  /** Sequence number current when it subscribed: it sees only later items. */
  readonly since: number;
}

type Pending = { kind: "event"; seq: number; jobId: string; json: string } | { kind: "cancel"; seq: number; json: string };


/** JSON text of a value that must survive the wire, or `invalid_argument`. */
function toJson(field: string, value: unknown): string {
  try {
    return JSON.stringify(value);
  } catch (cause) {
    throw new OrchestratorError("invalid_argument", `Expected \`${field}\` to be JSON-serialisable: ${(cause as Error).message}`, {
      cause,
      details: { field },
    });
  }
}

/**
 * The {@link JobEvents} half of `MemoryQueue`: job events and cancel commands fanned out in one
 * process. Each value is copied through JSON as a wire would, and each listener gets its own copy.
 * Delivery is synchronous but never re-entrant: a listener that publishes queues its value behind
 * the one being delivered, so every listener sees one global publish order.
 * @internal
 */
export class MemoryEvents {
  readonly #retentionMs: number;
  readonly #report: (error: OrchestratorError) => void;
  readonly #byJob = new Map<string, Set<Listener<JobEvent>>>();
  readonly #cancelListeners = new Set<Listener<CancelCommand>>();
  readonly #retained = new Deque<{ seq: number; json: string; expiresAt: number }>();
  /** Commands of jobs due later (`runAt`), kept until then plus the retention: their expiries do not follow send order. */
  #held: { seq: number; json: string; expiresAt: number }[] = [];
  readonly #pending = new Deque<Pending>();
  #seq = 0;
  #draining = false;

  constructor(retentionMs: number, report: (error: OrchestratorError) => void) {
    this.#retentionMs = retentionMs;
    this.#report = report;
  }

  publish(event: JobEvent): void {
    const { jobId } = checkJobEvent(event);
    this.#pending.push({ kind: "event", seq: ++this.#seq, jobId, json: toJson("event", event) });
    this.#drain();
  }

  subscribe(jobId: string, fn: (event: JobEvent) => void): Subscription {
    checkJobId("jobId", jobId);
    checkFunction("listener", fn);
    const listener: Listener<JobEvent> = { fn, since: this.#seq };
    let set = this.#byJob.get(jobId);
    if (!set) this.#byJob.set(jobId, (set = new Set()));
    set.add(listener);
    return {
      close: async () => {
        const current = this.#byJob.get(jobId);
        if (!current?.delete(listener)) return;
        if (current.size === 0) this.#byJob.delete(jobId);
      },
    };
  }

  cancel(command: CancelCommand): void {
    const clean = checkCancelCommand(command);
    const seq = ++this.#seq;
    const json = toJson("command", clean);
    this.#prune();
    const now = Date.now();
    if (clean.runAt !== undefined && clean.runAt > now) this.#held.push({ seq, json, expiresAt: clean.runAt + this.#retentionMs });
    else this.#retained.push({ seq, json, expiresAt: now + this.#retentionMs });
    this.#pending.push({ kind: "cancel", seq, json });
    this.#drain();
  }

  subscribeCancels(fn: (command: CancelCommand) => void): Subscription {
    checkFunction("listener", fn);
    this.#prune();
    const listener: Listener<CancelCommand> = { fn, since: this.#seq };
    // Replay first, in send order: everything retained has seq <= since, so the live path never repeats it.
    const replay = this.#held.length === 0 ? this.#retained : [...this.#retained, ...this.#held].sort((a, b) => a.seq - b.seq);
    for (const { json } of replay) this.#call(fn, json);
    this.#cancelListeners.add(listener);
    return {
      close: async () => {
        this.#cancelListeners.delete(listener);
      },
    };
  }

  /** Ends every subscription and drops what was retained or pending. */
  close(): void {
    this.#byJob.clear();
    this.#cancelListeners.clear();
    this.#retained.clear();
    this.#held = [];
    this.#pending.clear();
  }

  #prune(): void {
    const now = Date.now();
    // Expiry times only grow (one retention for all), so the expired ones are at the front.
    while ((this.#retained.peek()?.expiresAt ?? Infinity) <= now) this.#retained.shift();
    if (this.#held.length > 0) this.#held = this.#held.filter((item) => item.expiresAt > now);
  }

  #drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    try {
      for (let item = this.#pending.shift(); item; item = this.#pending.shift()) {
        if (item.kind === "cancel") {
          for (const listener of this.#cancelListeners) if (listener.since < item.seq) this.#call(listener.fn, item.json);
          continue;
        }
        const { seq, json } = item;
        for (const key of item.jobId === "*" ? ["*"] : [item.jobId, "*"]) {
          const set = this.#byJob.get(key);
          if (set) for (const listener of set) if (listener.since < seq) this.#call(listener.fn, json);
        }
      }
    } finally {
      this.#draining = false;
    }
  }

  #call<T>(fn: (value: T) => void, json: string): void {
    try {
      fn(JSON.parse(json) as T);
    } catch (cause) {
      this.#report(OrchestratorError.from(cause));
    }
  }
}
