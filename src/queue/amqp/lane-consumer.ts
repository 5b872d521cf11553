import { OrchestratorError } from "../../errors.ts";
import { PRIORITY_LEVELS } from "../../job/envelope.ts";
import type { JobEnvelope } from "../../job/envelope.ts";
import { checkInteger } from "../../validate.ts";
import { LanePicker } from "../lanes.ts";
import type { Consumer, Delivery } from "../types.ts";
import { AmqpConsumer, handOver } from "./amqp-consumer.ts";
import type { ConsumerHost } from "./amqp-consumer.ts";
import type { AmqpDelivery } from "./amqp-delivery.ts";

/** Deliveries a lane holds beyond what it runs while several lanes are busy. */
const LOOKAHEAD = 2;

/** One priority level: its queue's consumer and the deliveries it holds. */
interface Lane {
  readonly consumer: AmqpConsumer;
  /** Received, not handed to the handler yet, in queue order: the lane's lookahead. */
  waiting: AmqpDelivery[];
  /** Handed to the handler and not settled. */
  readonly running: Set<AmqpDelivery>;
  /** The prefetch asked of the lane's consumer. */
  prefetch: number;
}

/**
 * A consumption of every priority lane of an {@link AmqpQueue} (one quorum queue per level:
 * RabbitMQ 3.10 quorum queues ignore message priority), handing the handler at most `prefetch`
 * deliveries at once, each time the one the shared {@link LanePicker} chooses: the highest level
 * with a job received, unless a lower one's turn has come.
 *
 * Every idle lane keeps a consumer with credit, so a job arriving on a level that runs nothing
 * is received at once and taken by the next free slot: a high-priority job never waits behind
 * the low-priority ones that fill the slots. While one lane alone is busy it consumes exactly
 * as a single queue would (no lookahead). While several are, each holds up to {@link LOOKAHEAD}
 * deliveries beyond what it runs (unacked, unstarted), so the picker sees every level's next
 * job; a dispatcher that dies then returns those few to the broker, which counts them as
 * delivered (one attempt more). When the prefetch drops to 0 (a dispatcher pausing or closing)
 * the lookahead goes back to the queues without spending an attempt.
 * @internal
 */
export class AmqpLaneConsumer implements Consumer {
  readonly #handler: (delivery: Delivery) => void;
  readonly #host: ConsumerHost;
  readonly #lanes: Lane[];
  readonly #picker: LanePicker;
  readonly #waiting = (lane: number): boolean => (this.#lanes[lane] as Lane).waiting.length > 0;
  #prefetch: number;
  #running = 0;
  /** Keyed deliveries the handler holds (from the key queues): they take slots of the prefetch too. */
  #keyed = 0;
  #cancelled = false;

  /**
   * @param queueNames the lane queues, highest priority first
   * @param route where each lane's consumer sends a job of a concurrency key (see `AmqpConsumer`)
   */
  constructor(
    host: ConsumerHost,
    queueNames: readonly string[],
    handler: (delivery: Delivery) => void,
    prefetch: number,
    accept: ((job: JobEnvelope) => string | undefined) | undefined,
    agingPicks: number,
    route?: (job: JobEnvelope) => Promise<void>,
  ) {
    this.#host = host;
    this.#handler = handler;
    this.#prefetch = prefetch;
    this.#picker = new LanePicker(agingPicks);
    this.#lanes = queueNames.map((queueName, lane) => {
      const laneHost: ConsumerHost = { ...host, queueName, removed: () => {}, done: (delivery) => this.#done(lane, delivery) };
      const initial = prefetch > 0 ? 1 : 0;
      const consumer = new AmqpConsumer(laneHost, (delivery) => this.#arrived(lane, delivery as AmqpDelivery), initial, accept, route);
      return { consumer, waiting: [], running: new Set(), prefetch: initial };
    });
    if (this.#lanes.length !== PRIORITY_LEVELS) throw new OrchestratorError("internal", `expected ${PRIORITY_LEVELS} lanes`);
  }

  get prefetch(): number {
    return this.#prefetch;
  }

  /** Unsettled deliveries held now, running or in a lookahead. */
  get held(): number {
    let held = 0;
    for (const lane of this.#lanes) held += lane.consumer.held;
    return held;
  }

  /**
   * How many keyed deliveries (handed over by the concurrency-key consumer, not settled) the
   * handler holds now. They run in slots of the same prefetch, so the lanes hand over only what
   * is left: a job fetched beyond the free slots would wait in the handler, ahead of a
   * higher-priority job arriving later. @internal
   */
  setKeyed(count: number): void {
    if (count === this.#keyed) return;
    this.#keyed = count;
    this.#pump();
    this.#adjustAll();
  }

  /** Opens every lane's consumer. @internal */
  async start(): Promise<void> {
    await Promise.all(this.#lanes.map((lane) => lane.consumer.start()));
    this.#adjustAll();
  }

  async setPrefetch(prefetch: number): Promise<void> {
    this.#prefetch = checkInteger("prefetch", prefetch, 0, 65_535);
    if (prefetch === 0) {
      // Paused: the lookahead goes back to the queues, at no attempt's cost.
      for (const lane of this.#lanes) {
        for (const delivery of lane.waiting.splice(0)) {
          lane.consumer.release(delivery);
        }
      }
    }
    this.#pump();
    this.#adjustAll();
  }

  async cancel(): Promise<void> {
    if (this.#cancelled) return;
    this.#cancelled = true;
    await Promise.all(this.#lanes.map((lane) => lane.consumer.cancel()));
    this.#host.removed(this as unknown as AmqpConsumer);
  }

  #arrived(lane: number, delivery: AmqpDelivery): void {
    const state = this.#lanes[lane] as Lane;
    if (this.#prefetch === 0 || this.#cancelled) {
      state.consumer.release(delivery);
      return;
    }
    state.waiting.push(delivery);
    this.#pump();
    this.#adjustAll();
  }

  /** A delivery stopped counting: settled by the handler, lost, or timed out. */
  #done(lane: number, delivery: AmqpDelivery): void {
    const state = this.#lanes[lane] as Lane;
    if (state.running.delete(delivery)) {
      this.#running--;
      // The slot it held is free: the next job is picked now, before the ack reaches the broker.
      this.#pump();
      this.#adjustAll();
      return;
    }
    const index = state.waiting.indexOf(delivery);
    if (index !== -1) state.waiting.splice(index, 1);
  }

  /** Hands the handler the picked deliveries while it holds fewer than the prefetch (keyed ones included). */
  #pump(): void {
    while (this.#running + this.#keyed < this.#prefetch && !this.#cancelled) {
      const lane = this.#picker.pick(this.#waiting);
      if (lane === -1) return;
      const state = this.#lanes[lane] as Lane;
      const delivery = state.waiting.shift() as AmqpDelivery;
      state.running.add(delivery);
      this.#running++;
      handOver(this.#handler, delivery, (error) => this.#host.report(error, "consumer"), this.#host.handlerErrorDelayMs);
    }
  }

  #adjustAll(): void {
    let active = 0;
    for (const lane of this.#lanes) if (lane.running.size + lane.waiting.length > 0) active++;
    for (const lane of this.#lanes) this.#adjust(lane, active);
  }

  /**
   * Sets a lane's prefetch. Paused: exactly what it runs. An idle lane: 1, so a job arriving
   * there is seen at once. The only busy lane: the prefetch less the keyed deliveries held,
   * exactly as a single queue would (no lookahead, so nothing it holds waits unstarted). Several busy lanes: what it runs
   * plus {@link LOOKAHEAD}, so the picker sees every level's next job when a slot frees.
   * Raised at once; lowered only when paused, or for a busy lane when over by half the prefetch:
   * lowering cancels a broker consumer as its delivery settles (its ack waits for that) and
   * opening one is a quorum-queue command too, so following every swing halved the throughput
   * (measured with `npm run bench -- --only priority,single-queue`).
   */
  #adjust(lane: Lane, active: number): void {
    if (this.#cancelled) return;
    const paused = this.#prefetch === 0;
    const busy = lane.running.size + lane.waiting.length > 0;
    const free = Math.max(0, this.#prefetch - this.#keyed);
    const desired = paused ? lane.running.size : !busy ? 1 : active === 1 ? Math.max(free, lane.running.size) : lane.running.size + LOOKAHEAD;
    const slack = Math.max(2, Math.ceil(this.#prefetch / 2));
    let next = lane.prefetch;
    if (next < desired) next = desired;
    // An idle lane's spare consumers cost nothing (its queue is empty) and are what a burst there
    // needs: it is lowered only when paused, a busy one only when far over.
    else if (paused || (busy && next > desired + slack)) next = desired;
    if (next === lane.prefetch) return;
    lane.prefetch = next;
    lane.consumer.setPrefetch(next).catch((error: unknown) => this.#host.report(OrchestratorError.from(error), "channel"));
  }
}
