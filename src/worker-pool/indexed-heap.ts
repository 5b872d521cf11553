/**
 * A binary min-heap that knows where each item sits, so an item whose key changed can be moved
 * and any item can be taken out in O(log n), not only the top. The pool keeps one per job shape,
 * ordering free workers by when they were last leased.
 *
 * Items are compared only through `less`, and each item may be in the heap at most once.
 * @internal
 */
export class IndexedHeap<T> {
  readonly #items: T[] = [];
  readonly #positions = new Map<T, number>();
  readonly #less: (a: T, b: T) => boolean;

  /** @param less whether `a` must come out before `b`. */
  constructor(less: (a: T, b: T) => boolean) {
    this.#less = less;
  }

  /** How many items the heap holds. */
  get size(): number {
    return this.#items.length;
  }

  /** The item that comes out first, without taking it out. O(1). */
  peek(): T | undefined {
    return this.#items[0];
  }

  /** Whether `item` is in the heap. O(1). */
  has(item: T): boolean {
    return this.#positions.has(item);
  }

  /** Adds `item`, or re-positions it when it is already in. O(log n). */
  push(item: T): void {
    if (this.#positions.has(item)) {
      this.update(item);
      return;
    }
    this.#items.push(item);
    this.#positions.set(item, this.#items.length - 1);
    this.#up(this.#items.length - 1);
  }

  /** Takes out and returns the first item. O(log n). */
  pop(): T | undefined {
    const top = this.#items[0];
    if (top !== undefined) this.delete(top);
    return top;
  }

  /** Takes `item` out; false when it was not in. O(log n). */
  delete(item: T): boolean {
    const index = this.#positions.get(item);
    if (index === undefined) return false;
    this.#positions.delete(item);
    const last = this.#items.pop() as T;
    if (index < this.#items.length) {
      this.#items[index] = last;
      this.#positions.set(last, index);
      this.#down(this.#up(index));
    }
    return true;
  }

  /** Restores the order after `item`'s key changed; does nothing when it is not in. O(log n). */
  update(item: T): void {
    const index = this.#positions.get(item);
    if (index !== undefined) this.#down(this.#up(index));
  }

  /** Moves the item at `index` towards the root while it beats its parent; returns where it ends. */
  #up(index: number): number {
    const items = this.#items;
    const item = items[index] as T;
    while (index > 0) {
      const parentIndex = (index - 1) >> 1;
      const parent = items[parentIndex] as T;
      if (!this.#less(item, parent)) break;
      items[index] = parent;
      this.#positions.set(parent, index);
      index = parentIndex;
    }
    items[index] = item;
    this.#positions.set(item, index);
    return index;
  }

  /** Moves the item at `index` towards the leaves while a child beats it. */
  #down(index: number): void {
    const items = this.#items;
    const length = items.length;
    const item = items[index] as T;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= length) break;
      const right = left + 1;
      let child = left;
      if (right < length && this.#less(items[right] as T, items[left] as T)) child = right;
      const childItem = items[child] as T;
      if (!this.#less(childItem, item)) break;
      items[index] = childItem;
      this.#positions.set(childItem, index);
      index = child;
    }
    items[index] = item;
    this.#positions.set(item, index);
  }
}
