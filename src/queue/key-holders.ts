import type { JobEnvelope } from "../job/envelope.ts";
import { keyDroppedMessage, keySupersededMessage, type JobConcurrency } from "../job/concurrency.ts";
import type { KeyHooks } from "./types.ts";

/** One delivery holding a place of its key. @internal */
export interface KeyHolder {
  readonly jobId: string;
  /** The hooks of the consumer that holds it (asked to stop it under `cancel_running`). */
  readonly hooks: KeyHooks | undefined;
  /** A newer job asked for it to stop (it still holds its place until settled). */
  superseded: boolean;
}

/** What to do with the job next in line of a key. @internal */
export type KeyVerdict =
  | { kind: "deliver" }
  | { kind: "drop"; message: string }
  | { kind: "wait" };

/**
 * The places of one concurrency key held in this process, and the one rule of the strategies,
 * shared by `MemoryQueue` (all of its consumers) and `AmqpQueue` (the single active consumer
 * of the key's queue): the job next in line is delivered while fewer than its `limit` hold the
 * key; else `drop_newest` drops it, `cancel_running` asks the oldest holder not yet asked to
 * stop (once per waiting job), `wait` waits. Strategies act when a job is next in line, so a
 * job behind others waits its turn whatever its strategy.
 * @internal
 */
export class KeyHolders {
  readonly holders: KeyHolder[] = [];
  /** The job next in line that already asked a holder to stop. */
  #asked: string | undefined;

  /** Holders of the key now. */
  get size(): number {
    return this.holders.length;
  }

  /**
   * Decides for `job`, next in line; under `cancel_running` calls the holder's `supersede` hook
   * (once per job). `cap`: the most places this process may hand out, whatever the job's limit.
   */
  decide(job: JobEnvelope, report: (error: unknown) => void, cap = Infinity): KeyVerdict {
    const c = job.concurrency as JobConcurrency;
    if (this.holders.length < Math.min(c.limit, cap)) return { kind: "deliver" };
    if (c.strategy === "drop_newest") return { kind: "drop", message: keyDroppedMessage(c) };
    if (c.strategy === "cancel_running" && this.#asked !== job.id) {
      const target = this.holders.find((h) => !h.superseded);
      if (target !== undefined) {
        this.#asked = job.id;
        target.superseded = true;
        try {
          target.hooks?.supersede?.(target.jobId, job, keySupersededMessage(c, job.id));
        } catch (error) {
          report(error);
        }
      }
    }
    return { kind: "wait" };
  }

  /** `job`'s delivery now holds a place. */
  hold(job: JobEnvelope, hooks: KeyHooks | undefined): KeyHolder {
    if (this.#asked === job.id) this.#asked = undefined;
    const holder: KeyHolder = { jobId: job.id, hooks, superseded: false };
    this.holders.push(holder);
    return holder;
  }

  /** `holder`'s delivery was settled or lost. */
  release(holder: KeyHolder): void {
    const index = this.holders.indexOf(holder);
    if (index >= 0) this.holders.splice(index, 1);
  }
}

/** Calls a consumer's `waiting` hook, reporting a throw. @internal */
export function notifyWaiting(hooks: KeyHooks | undefined, job: JobEnvelope, reason: string, report: (error: unknown) => void): void {
  try {
    hooks?.waiting?.(job, reason);
  } catch (error) {
    report(error);
  }
}
