import type { CancelCommand } from "../job/types.ts";

/**
 * The cancel commands a dispatcher has received, by job id, so that a job cancelled while still
 * queued never starts when it is consumed later. Bounded in count and in age; every operation
 * is O(1) amortized (a Map keeps receive order, so the oldest entries are pruned from its front).
 * A command for a job due later (`runAt`) is kept apart until that time plus the retention, in a
 * second map bounded by the same count: a job delayed for weeks outlives the retention.
 * @internal
 */
export class CancelMemory {
  readonly #entries = new Map<string, { command: CancelCommand; receivedAt: number }>();
  /** Commands of jobs due later, until `expiresAt`; pruned oldest-received first past the count. */
  readonly #held = new Map<string, { command: CancelCommand; expiresAt: number }>();
  readonly #retentionMs: number;
  readonly #maxEntries: number;

  constructor(retentionMs: number, maxEntries: number) {
    this.#retentionMs = retentionMs;
    this.#maxEntries = maxEntries;
  }

  /** Remembers `command`; a later command for the same job replaces the earlier one. */
  add(command: CancelCommand, now = Date.now()): void {
    if (command.runAt !== undefined && command.runAt > now) {
      const expiresAt = command.runAt + this.#retentionMs;
      this.#held.delete(command.jobId);
      this.#held.set(command.jobId, { command, expiresAt });
      for (const [jobId, entry] of this.#held) {
        if (this.#held.size <= this.#maxEntries && entry.expiresAt > now) break;
        this.#held.delete(jobId);
      }
    }
    this.#entries.delete(command.jobId);
    this.#entries.set(command.jobId, { command, receivedAt: now });
    this.#prune(now);
  }

  /** The command remembered for `jobId`, unless it has expired. */
  get(jobId: string, now = Date.now()): CancelCommand | undefined {
    if (this.#held.size > 0) {
      const held = this.#held.get(jobId);
      if (held !== undefined && held.expiresAt >= now) return held.command;
    }
    if (this.#entries.size === 0) return undefined;
    const entry = this.#entries.get(jobId);
    if (entry === undefined) return undefined;
    if (now - entry.receivedAt > this.#retentionMs) {
      this.#entries.delete(jobId);
      return undefined;
    }
    return entry.command;
  }

  /** How many commands are remembered (those of jobs due later counted once). */
  get size(): number {
    let held = 0;
    for (const jobId of this.#held.keys()) if (!this.#entries.has(jobId)) held++;
    return this.#entries.size + held;
  }

  #prune(now: number): void {
    for (const [jobId, entry] of this.#entries) {
      if (this.#entries.size <= this.#maxEntries && now - entry.receivedAt <= this.#retentionMs) return;
      this.#entries.delete(jobId);
    }
  }
}
