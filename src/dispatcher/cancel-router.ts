import type { CancelCommand } from "../job/types.ts";
import { cancelError } from "../signals.ts";
import { CancelMemory } from "./cancel-memory.ts";
import type { RunRegistry } from "./run.ts";

/**
 * Routes cancel commands to the runs of their job, and remembers them (`cancelRetentionMs`,
 * `maxRetainedCancels`) so that a job cancelled while still queued never starts when it is
 * consumed later, even on a dispatcher that started after the cancel was sent (the events replay
 * retained cancels to every new subscriber, and the dispatcher subscribes before it consumes).
 * @internal
 */
export class CancelRouter {
  readonly #runs: RunRegistry;
  readonly #memory: CancelMemory;

  constructor(runs: RunRegistry, retentionMs: number, maxRetained: number) {
    this.#runs = runs;
    this.#memory = new CancelMemory(retentionMs, maxRetained);
  }

  /** The cancel-subscription listener: remembers `command` and stops every held run of its job. */
  readonly onCancel = (command: CancelCommand): void => {
    if (typeof command?.jobId !== "string") return;
    this.#memory.add(command);
    this.stop(command);
  };

  /**
   * Stops every held run of the command's job without remembering the command (a newer job of
   * the same concurrency key supersedes it: only the copies held now stop).
   */
  stop(command: CancelCommand): void {
    this.#runs.forJob(command.jobId, (run) => {
      if (run.stop === undefined) run.cancel = command;
      run.halt("cancel", cancelError(command.reason, command.message));
    });
  }

  /** The cancel remembered for `jobId`, if any: its runs must not start. */
  cancelFor(jobId: string): CancelCommand | undefined {
    return this.#memory.get(jobId);
  }
}
