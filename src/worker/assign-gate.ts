/**
 * When a session's Assigns may start their handlers on a worker, so that a job the orchestrator
 * has already failed over (it declared the session lost) never starts; see docs/wire.md, "A
 * worker that stalls".
 * @internal
 */

/** Options of {@link AssignGate}. */
export interface AssignGateOptions<T> {
  /** Starts one item let through; items go in arrival order, from a `setImmediate` callback. */
  start: (item: T) => void;
  /**
   * Longest silence between the orchestrator's Pings that cannot hide a lost-declaration (see
   * {@link stallMsFor}); undefined when the orchestrator announced no ping timing: items are then
   * only deferred to `setImmediate`.
   */
  stallMs: number | undefined;
  /**
   * Monotonic clock in milliseconds.
   * @default performance.now
   */
  now?: () => number;
}

/**
 * How long a worker may go without a Ping from an orchestrator that pings every `pingIntervalMs`
 * and declares the session lost after `pingTimeoutMs` without a Pong: halfway between the two,
 * so neither the normal gap between pings (one period plus jitter) nor a silence that let the
 * orchestrator give up (the timeout less the Pong's way back) falls on the wrong side.
 */
export function stallMsFor(pingIntervalMs: number, pingTimeoutMs: number): number {
  const period = pingIntervalMs < pingTimeoutMs ? pingIntervalMs : pingTimeoutMs / 2;
  return period + (pingTimeoutMs - period) / 2;
}

/**
 * Holds the Assigns of one session and starts them once two things are known:
 *
 * 1. Everything that arrived with them has been processed: they start at `setImmediate`, after
 *    grpc-js has handled the rest of the socket read that carried them, so a Cancel, a stream
 *    reset or a closed connection buffered behind an Assign drops it ({@link drop}, {@link close})
 *    before its handler runs.
 * 2. The session is not stalled. The orchestrator sends a Ping only once the previous one was
 *    answered, and declares the session lost when a Ping goes unanswered for its timeout; so when
 *    the last Ping is older than `stallMs`, or arrived more than `stallMs` after the one before it
 *    (the worker was frozen, its loop blocked, or the network held the traffic), the orchestrator
 *    may have given up while the reset is still on its way. Then items wait for a fresh round
 *    trip: a Ping other than the first one received since the stall was noticed, which the
 *    orchestrator sent only after it got the Pong to that first one, so at a moment when it still
 *    held the session alive. A session that ends meanwhile drops them.
 *
 * Cheap on the happy path: one `setImmediate` per batch of Assigns and a clock read per Ping and
 * per batch.
 */
export class AssignGate<T> {
  readonly #start: (item: T) => void;
  readonly #stallMs: number | undefined;
  readonly #now: () => number;
  #held: T[] = [];
  #immediate: NodeJS.Immediate | undefined;
  #closed = false;
  #lastPingAt: number;
  #stalled = false;
  /** Sequence number of the first Ping received since the stall was noticed. */
  #fence: number | undefined;

  constructor(options: AssignGateOptions<T>) {
    this.#start = options.start;
    this.#stallMs = options.stallMs;
    this.#now = options.now ?? (() => performance.now());
    // The orchestrator's first Ping comes one period after the session opens.
    this.#lastPingAt = this.#now();
  }

  /** Whether items wait for a fresh ping round trip. */
  get stalled(): boolean {
    return this.#stalled;
  }

  /** Items held now. */
  get size(): number {
    return this.#held.length;
  }

  /** Holds `item` until it may start (at the next `setImmediate` at the soonest). Ignored once closed. */
  hold(item: T): void {
    if (this.#closed) return;
    this.#held.push(item);
    this.#schedule();
  }

  /** Records a Ping of the orchestrator, received now with sequence number `seq`. */
  ping(seq: number): void {
    if (this.#closed) return;
    const now = this.#now();
    if (this.#stallMs !== undefined) {
      if (now - this.#lastPingAt > this.#stallMs) this.#enterStall();
      if (this.#stalled) {
        if (this.#fence === undefined) {
          this.#fence = seq;
        } else if (seq !== this.#fence) {
          this.#stalled = false;
          this.#fence = undefined;
          if (this.#held.length > 0) this.#schedule();
        }
      }
    }
    this.#lastPingAt = now;
  }

  /** Drops the held items `match` accepts (their job was cancelled); returns how many. */
  drop(match: (item: T) => boolean): number {
    if (this.#held.length === 0) return 0;
    const before = this.#held.length;
    this.#held = this.#held.filter((item) => !match(item));
    return before - this.#held.length;
  }

  /** Drops every held item and lets nothing through from now on (the session ended). Idempotent. */
  close(): void {
    this.#closed = true;
    this.#held = [];
    clearImmediate(this.#immediate);
    this.#immediate = undefined;
  }

  #enterStall(): void {
    this.#stalled = true;
    this.#fence = undefined;
  }

  #schedule(): void {
    this.#immediate ??= setImmediate(this.#flush);
  }

  readonly #flush = (): void => {
    this.#immediate = undefined;
    if (this.#closed || this.#held.length === 0) return;
    // Checked now, not on receipt: the worker may have stalled between the two.
    if (this.#stallMs !== undefined && !this.#stalled && this.#now() - this.#lastPingAt > this.#stallMs) this.#enterStall();
    if (this.#stalled) return;
    const items = this.#held;
    this.#held = [];
    for (const item of items) this.#start(item);
  };
}
