import { invalidArgument } from "../errors.ts";
import { MAX_PREFERRED_WEIGHT } from "../job/affinity.ts";
import { checkInteger, checkObject, checkString } from "../validate.ts";
import { IndexedHeap } from "./indexed-heap.ts";
import type { JobRequirements } from "./types.ts";

/** Most job shapes (type + required and preferred labels) the pool keeps an index for; beyond, the least recently used is dropped. */
export const MAX_VIEWS = 256;

/** What the index needs of a worker. @internal */
export interface ShapeMember {
  readonly labels: Readonly<Record<string, string>>;
  readonly jobTypes: ReadonlySet<string> | undefined;
  /** Lease order: lower was leased longer ago. */
  readonly order: number;
  /** Whether it has a free slot and serves (then it sits in the `free` heaps of its views). */
  readonly listed: boolean;
  /** The views it matches; kept by the index and the pool. */
  readonly views: Set<View<this>>;
}

/** The index of one job shape: the workers that can run it, and those of them with a free slot. @internal */
export interface View<W> {
  readonly type: string;
  /** Required labels, sorted by key. */
  readonly labels: ReadonlyArray<readonly [string, string]>;
  /** Preferred labels (name, value, weight), sorted by name; empty for most jobs. */
  readonly preferred: ReadonlyArray<readonly [string, string, number]>;
  /**
   * Serving workers with a free slot that match: the highest score of preferred labels first,
   * then the least recently leased.
   */
  readonly free: IndexedHeap<W>;
  /** Workers in the pool, in any state, that match (for `canRun`). */
  members: number;
}

/** Whether `worker` runs the view's job type and carries each of its required labels. @internal */
export function matches(worker: Pick<ShapeMember, "labels" | "jobTypes">, view: Pick<View<unknown>, "type" | "labels">): boolean {
  if (worker.jobTypes !== undefined && !worker.jobTypes.has(view.type)) return false;
  for (const [name, value] of view.labels) {
    if (!Object.hasOwn(worker.labels, name) || worker.labels[name] !== value) return false;
  }
  return true;
}

const byLeaseOrder = (a: ShapeMember, b: ShapeMember): boolean => a.order < b.order;

/** The sum of the weights of the preferred labels `worker` carries with the same value. @internal */
export function scoreOf(worker: Pick<ShapeMember, "labels">, preferred: ReadonlyArray<readonly [string, string, number]>): number {
  let score = 0;
  for (const [name, value, weight] of preferred) {
    if (Object.hasOwn(worker.labels, name) && worker.labels[name] === value) score += weight;
  }
  return score;
}

/**
 * Highest score first, then lease order. The score is computed at each comparison (a few labels,
 * O(log n) comparisons per heap move): nothing to keep in step when a worker's labels change.
 */
function byScore(preferred: ReadonlyArray<readonly [string, string, number]>): (a: ShapeMember, b: ShapeMember) => boolean {
  return (a, b) => {
    const sa = scoreOf(a, preferred);
    const sb = scoreOf(b, preferred);
    return sa !== sb ? sa > sb : a.order < b.order;
  };
}

/**
 * The pool's index of job shapes (type + required labels + preferred labels) in use: per shape,
 * a heap of the matching workers with a free slot, ordered by the score of the preferred labels
 * they carry and then by last lease, and how many workers match. Built on first use of a shape
 * in O(n); at most {@link MAX_VIEWS} are kept, the least recently used
 * dropped first. The pool keeps each worker's `views` and the heaps in step as workers come,
 * go and change state.
 * @internal
 */
export class ShapeIndex<W extends ShapeMember> {
  /** Job shape key → its view, in least recently used order. */
  readonly #views = new Map<string, View<W>>();
  readonly #workers: () => Iterable<W>;

  /** `workers` lists the pool's workers (any state but removed). */
  constructor(workers: () => Iterable<W>) {
    this.#workers = workers;
  }

  /**
   * The view of `job`'s shape, built on first use.
   * @throws {OrchestratorError} `invalid_argument` for a job without a type or with a non-string label.
   */
  viewOf(job: JobRequirements): View<W> {
    const spec = checkObject("job", job);
    const type = checkString("job.type", spec.type);
    const labels: Array<readonly [string, string]> = [];
    let key = `t:${type}`;
    if (spec.labels !== undefined) {
      const required = checkObject("job.labels", spec.labels);
      for (const name of Object.keys(required).sort()) {
        const value = required[name];
        if (typeof value !== "string") throw invalidArgument(`job.labels.${name}`, "a string", value);
        labels.push([name, value]);
      }
      if (labels.length > 0) key = JSON.stringify([type, labels]);
    }
    const preferred: Array<readonly [string, string, number]> = [];
    if (spec.preferred !== undefined) {
      const wanted = checkObject("job.preferred", spec.preferred);
      for (const name of Object.keys(wanted).sort()) {
        const entry = checkObject(`job.preferred.${name}`, wanted[name]);
        if (typeof entry.value !== "string") throw invalidArgument(`job.preferred.${name}.value`, "a string", entry.value);
        const weight = entry.weight === undefined ? 1 : checkInteger(`job.preferred.${name}.weight`, entry.weight, 1, MAX_PREFERRED_WEIGHT);
        preferred.push([name, entry.value, weight]);
      }
      if (preferred.length > 0) key = JSON.stringify([type, labels, preferred]);
    }
    let view = this.#views.get(key);
    if (view !== undefined) {
      // Re-insert to keep the map in least recently used order.
      this.#views.delete(key);
      this.#views.set(key, view);
      return view;
    }
    view = { type, labels, preferred, free: new IndexedHeap<W>(preferred.length === 0 ? byLeaseOrder : byScore(preferred)), members: 0 };
    for (const worker of this.#workers()) {
      if (!matches(worker, view)) continue;
      worker.views.add(view);
      view.members += 1;
      if (worker.listed) view.free.push(worker);
    }
    this.#views.set(key, view);
    if (this.#views.size > MAX_VIEWS) {
      const [oldestKey, oldest] = this.#views.entries().next().value as [string, View<W>];
      this.#views.delete(oldestKey);
      for (const worker of this.#workers()) worker.views.delete(oldest);
    }
    return view;
  }

  /** Every view, for a worker joining the pool to find those it matches. */
  values(): IterableIterator<View<W>> {
    return this.#views.values();
  }
}
