import type { CancelCommand } from "../job/types.ts";

/**
 * The cancel commands a dispatcher has received, by job id, so that a job cancelled while still
 * queued never starts when it is consumed later. Bounded in count and in age; every operation
 * is O(1) amortized (a Map keeps receive order, so the oldest entries are pruned from its front).
 * @internal
 */
export class CancelMemory {
  readonly #entries = new Map<string, { command: CancelCommand; receivedAt: number }>();
  readonly #retentionMs: number;
  readonly #maxEntries: number;

  constructor(retentionMs: number, maxEntries: number) {
    this.#retentionMs = retentionMs;
    this.#maxEntries = maxEntries;
  }

  /** Remembers `command`; a later command for the same job replaces the earlier one. */
  add(command: CancelCommand, now = Date.now()): void {
    this.#entries.delete(command.jobId);
    this.#entries.set(command.jobId, { command, receivedAt: now });
    this.#prune(now);
  }

  /** The command remembered for `jobId`, unless it has expired. */
  get(jobId: string, now = Date.now()): CancelCommand | undefined {
    if (this.#entries.size === 0) return undefined;
    const entry = this.#entries.get(jobId);
    if (entry === undefined) return undefined;
    if (now - entry.receivedAt > this.#retentionMs) {
      this.#entries.delete(jobId);
      return undefined;
    }
    return entry.command;
  }

  /** How many commands are remembered. */
  get size(): number {
    return this.#entries.size;
  }

  #prune(now: number): void {
    for (const [jobId, entry] of this.#entries) {
      if (this.#entries.size <= this.#maxEntries && now - entry.receivedAt <= this.#retentionMs) return;
      this.#entries.delete(jobId);
    }
  }
}
