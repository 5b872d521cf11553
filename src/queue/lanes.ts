import { PRIORITY_LEVELS } from "../job/envelope.ts";
import { checkInteger } from "../validate.ts";

/**
 * Picks after which a waiting lower-priority level gets the next turn by default: with every
 * level busy, the highest takes 10 picks in a row, then each level passed over 10 times gets one.
 */
export const DEFAULT_PRIORITY_AGING_PICKS = 10;

/**
 * Checks the `priorityAgingPicks` option of a queue.
 * @throws {OrchestratorError} `invalid_argument` unless an integer from 1 to 1,000,000.
 * @internal
 */
export function checkAgingPicks(field: string, value: unknown): number {
  return checkInteger(field, value, 1, 1_000_000);
}

/**
 * Chooses which priority level (lane) serves the next free slot: the highest level with a job
 * waiting, except that a level passed over `agingPicks` times while it had a job waiting gets
 * the next turn (the one passed over most first, then the higher), so a steady stream of
 * high-priority jobs never starves the others. `MemoryQueue` and `AmqpQueue` share it, so both order jobs alike.
 * Lanes are indexed 0 (priority 1, highest) to {@link PRIORITY_LEVELS} - 1.
 * @internal
 */
export class LanePicker {
  readonly #agingPicks: number;
  /** Picks each lane was passed over while it had a job waiting, since its last turn. */
  readonly #passedOver = new Array<number>(PRIORITY_LEVELS).fill(0);

  constructor(agingPicks: number = DEFAULT_PRIORITY_AGING_PICKS) {
    this.#agingPicks = agingPicks;
  }

  /**
   * The lane to serve next among those for which `waiting(lane)` is true, or -1 when none is.
   * Counts the pick: every other waiting lane was passed over once more.
   */
  pick(waiting: (lane: number) => boolean): number {
    let highest = -1;
    let aged = -1;
    let agedLongest = this.#agingPicks - 1;
    for (let lane = 0; lane < PRIORITY_LEVELS; lane++) {
      if (!waiting(lane)) continue;
      if (highest === -1) highest = lane;
      const passed = this.#passedOver[lane] as number;
      if (passed > agedLongest) {
        aged = lane;
        agedLongest = passed;
      }
    }
    const chosen = aged === -1 ? highest : aged;
    if (chosen === -1) return -1;
    for (let lane = 0; lane < PRIORITY_LEVELS; lane++) {
      if (lane === chosen) this.#passedOver[lane] = 0;
      else if (waiting(lane)) this.#passedOver[lane] = (this.#passedOver[lane] as number) + 1;
    }
    return chosen;
  }
}

/** The lane (0-based) of a priority level (1-based). @internal */
export function laneOf(priority: number): number {
  return priority - 1;
}
