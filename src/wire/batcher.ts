/**
 * When a batch of session messages is written:
 * - `immediate`: at `setImmediate`, after the I/O callbacks of the current loop turn, so every
 *   message produced while handling one burst of input leaves in one gRPC message (the default).
 * - `microtask`: at the end of the current callback.
 * - `none`: every message is written on its own (one gRPC message each).
 * @internal
 */
export type FlushMode = "immediate" | "microtask" | "none";

/** Options of {@link Batcher}. @internal */
export interface BatcherOptions {
  mode: FlushMode;
  /** A batch is written at once when its estimated size reaches this many bytes. */
  maxBytes: number;
  /** A batch is written at once when it holds this many messages. */
  maxCount: number;
}

/**
 * Collects messages and hands them to `write` in batches, in order. The wire carries each batch
 * as one gRPC message (`SessionRequest.messages` / `SessionResponse.messages`), which saves the
 * per-message cost of grpc-js and HTTP/2 when many jobs start or finish at once.
 * @internal
 */
export class Batcher<M> {
  readonly #write: (messages: M[]) => void;
  readonly #options: BatcherOptions;
  #pending: M[] = [];
  #bytes = 0;
  #scheduled = false;
  #closed = false;

  constructor(write: (messages: M[]) => void, options: BatcherOptions) {
    this.#write = write;
    this.#options = options;
  }

  /** Queues `message` (of about `bytes` bytes encoded); writes the batch when it is full. */
  push(message: M, bytes: number): void {
    if (this.#closed) return;
    if (this.#options.mode === "none") {
      this.#write([message]);
      return;
    }
    // A big message goes alone, so no batch grows past the limit by more than one message.
    if (this.#pending.length > 0 && this.#bytes + bytes > this.#options.maxBytes) this.flush();
    this.#pending.push(message);
    this.#bytes += bytes;
    if (this.#bytes >= this.#options.maxBytes || this.#pending.length >= this.#options.maxCount) {
      this.flush();
      return;
    }
    if (!this.#scheduled) {
      this.#scheduled = true;
      if (this.#options.mode === "microtask") queueMicrotask(this.#onTick);
      else setImmediate(this.#onTick);
    }
  }

  /** Writes what is pending now. */
  flush(): void {
    if (this.#pending.length === 0) return;
    const batch = this.#pending;
    this.#pending = [];
    this.#bytes = 0;
    this.#write(batch);
  }

  /** Drops what is pending and ignores later pushes. */
  close(): void {
    this.#closed = true;
    this.#pending = [];
    this.#bytes = 0;
  }

  readonly #onTick = (): void => {
    this.#scheduled = false;
    if (!this.#closed) this.flush();
  };
}
