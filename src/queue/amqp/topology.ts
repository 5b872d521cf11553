import { createHash } from "node:crypto";
import type { Channel } from "amqplib";
import { OrchestratorError } from "../../errors.ts";
import { checkObject, checkString } from "../../validate.ts";
import { fromAmqpError } from "./errors.ts";
import { concurrencyKeyHash } from "../../job/concurrency.ts";
import { DEFAULT_PRIORITY, PRIORITY_LEVELS } from "../../job/envelope.ts";

/**
 * The broker objects one deployment uses. Every name derives from `queueName` unless overridden,
 * so two deployments on one broker only need two queue names.
 */
export interface AmqpTopologyNames {
  /** The durable quorum job queue. @default queueName */
  jobs: string;
  /** Where dead letters land, with their reason. @default `${queueName}.dead` */
  deadLetters: string;
  /** Prefix of the delay queues, one per delay level: `${delayPrefix}.${ms}ms`. @default `${queueName}.delay` */
  delayPrefix: string;
  /** Topic exchange carrying job events, routing key `${kind}.${jobKey}`. @default `${queueName}.events` */
  events: string;
  /** Fanout exchange every cancel command is published to. @default `${queueName}.cancels` */
  cancels: string;
  /** Stream queue bound to the cancel exchange that retains cancel commands. @default `${queueName}.cancels.log` */
  cancelLog: string;
  /**
   * Prefix of the concurrency key queues, one per key: `${keysPrefix}.${hash of the key}`, each a
   * quorum queue with a single active consumer. @default `${queueName}.keys`
   */
  keysPrefix: string;
  /** Stream of the concurrency keys in use, read by every dispatcher to consume their queues. @default `${queueName}.keys.log` */
  keyLog: string;
  /** Topic exchange carrying worker-pool snapshots and drain commands (console, `PoolReporter`). @default `${queueName}.pool` */
  pool: string;
}

/** The default job queue name. */
export const DEFAULT_QUEUE_NAME = "blacktree.jobs";

/** Resolves the names of a deployment from its queue name and overrides. @internal */
export function resolveTopologyNames(queueName: unknown, overrides: unknown): AmqpTopologyNames {
  const base = queueName === undefined ? DEFAULT_QUEUE_NAME : checkString("queueName", queueName, 200);
  const o = overrides === undefined ? {} : checkObject("names", overrides);
  const name = (key: keyof AmqpTopologyNames, fallback: string) => (o[key] === undefined ? fallback : checkString(`names.${key}`, o[key], 200));
  return {
    jobs: name("jobs", base),
    deadLetters: name("deadLetters", `${base}.dead`),
    delayPrefix: name("delayPrefix", `${base}.delay`),
    events: name("events", `${base}.events`),
    cancels: name("cancels", `${base}.cancels`),
    cancelLog: name("cancelLog", `${base}.cancels.log`),
    keysPrefix: name("keysPrefix", `${base}.keys`),
    keyLog: name("keyLog", `${base}.keys.log`),
    pool: name("pool", `${base}.pool`),
  };
}

/**
 * The queue of one priority lane: the job queue itself for the default priority (so existing
 * deployments and dead-lettering keep working), `<jobs>.p<level>` for the others.
 * @internal
 */
export function laneQueueName(names: AmqpTopologyNames, priority: number): string {
  return priority === DEFAULT_PRIORITY ? names.jobs : `${names.jobs}.p${priority}`;
}

/** Every lane queue, highest priority first (index = lane). @internal */
export function laneQueueNames(names: AmqpTopologyNames): string[] {
  return Array.from({ length: PRIORITY_LEVELS }, (_, lane) => laneQueueName(names, lane + 1));
}

/**
 * Levels of the delay cascade: level `n` holds a message `2^n` ms, so levels 0 to 32 add up to
 * any delay below 2^33 ms (99.4 days), above `MAX_DELAY_MS`. @internal
 */
export const DELAY_LEVELS = 33;

/** Name of the delay queue of one level: `${delayPrefix}.${2^level}ms`. @internal */
export function delayQueueName(names: AmqpTopologyNames, level: number): string {
  return `${names.delayPrefix}.${2 ** level}ms`;
}

/** Name of the topic exchange of one level of the delay cascade. @internal */
export function delayExchangeName(names: AmqpTopologyNames, level: number): string {
  return `${names.delayPrefix}.level.${level}`;
}

/** Name of the topic exchange a delayed message leaves the cascade by, routed to its destination. @internal */
export function delayDueExchangeName(names: AmqpTopologyNames): string {
  return `${names.delayPrefix}.due`;
}

/**
 * Every durable queue and exchange that an `AmqpQueue` and an `AmqpEvents` built with these names
 * may declare (the per-process subscriber queues delete themselves), for tools and tests that
 * remove a deployment: deleting one that was never declared is a no-op in RabbitMQ.
 * @example
 * ```ts
 * const { queues, exchanges } = topologyObjects(queue.names);
 * for (const name of queues) await channel.deleteQueue(name);
 * for (const name of exchanges) await channel.deleteExchange(name);
 * ```
 */
export function topologyObjects(names: Readonly<AmqpTopologyNames>): { queues: string[]; exchanges: string[] } {
  const levels = Array.from({ length: DELAY_LEVELS }, (_, level) => level);
  return {
    queues: [...laneQueueNames(names), names.deadLetters, names.cancelLog, names.keyLog, ...levels.map((level) => delayQueueName(names, level))],
    exchanges: [names.events, names.cancels, names.pool, ...levels.map((level) => delayExchangeName(names, level)), delayDueExchangeName(names)],
  };
}

const plainKey = /^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$/;

/**
 * The routing-key form of a job id: the id itself when it is a safe topic key (no `*`, `#`,
 * empty words, at most 200 characters), else `~` and a hash (`~` never appears in a plain key,
 * so the two forms cannot collide). Subscribers filter on the event's own `jobId` anyway.
 * @internal
 */
export function jobKey(jobId: string): string {
  if (jobId.length <= 200 && plainKey.test(jobId)) return jobId;
  return `~${createHash("sha256").update(jobId).digest("base64url").slice(0, 32)}`;
}

/** Routing key of one job event. @internal */
export function eventRoutingKey(kind: string, jobId: string): string {
  return `${kind}.${jobKey(jobId)}`;
}

/** Binding key that receives every event of one job (any kind). @internal */
export function jobBindingKey(jobId: string): string {
  return `*.${jobKey(jobId)}`;
}

/** Turns a failed declaration into a clear error; a 406 names the conflict and the way out. */
function declareError(error: unknown, what: string): OrchestratorError {
  const translated = fromAmqpError(error, `declaring ${what}`);
  if (translated.code !== "precondition_failed") return translated;
  return new OrchestratorError(
    "precondition_failed",
    `${what} already exists with other arguments than these options declare (${(error as Error).message}). ` +
      "Delete it, or construct the queue with the options it was created with (see docs/rabbitmq.md)",
    { cause: error, details: { ...translated.details, object: what } },
  );
}

async function declare<T>(what: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw declareError(error, what);
  }
}

/** Arguments of the quorum job queue; a re-declaration with other values fails with 406. @internal */
export function jobQueueArguments(names: AmqpTopologyNames, deliveryLimit: number): Record<string, unknown> {
  return {
    "x-queue-type": "quorum",
    // Crash-loop guard: a message returned unsettled (consumer or connection died) more than this
    // many times is dead-lettered by the broker with an x-death entry of reason delivery_limit.
    "x-delivery-limit": deliveryLimit,
    "x-dead-letter-exchange": "",
    "x-dead-letter-routing-key": names.deadLetters,
    // At-least-once dead-lettering keeps a poison message in the job queue until the dead-letter
    // queue confirmed it; it requires reject-publish overflow (no length limit is set, so it never triggers).
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
  };
}

/**
 * Declares the job queue (with its priority lanes unless `lanes` is false) and its dead-letter
 * queue. Idempotent; a conflicting existing queue
 * rejects `precondition_failed` (the channel it ran on is closed by the broker).
 * @internal
 */
export async function declareJobTopology(channel: Channel, names: AmqpTopologyNames, deliveryLimit: number, lanes = true): Promise<void> {
  // Quorum queues of RabbitMQ 3.10 refuse `x-max-priority` and ignore a message's priority: each
  // level is a queue of its own with the job queue's arguments (same limit, same dead letters).
  // The job queue first: a conflict with an existing deployment is reported under its name.
  const queues = lanes ? [names.jobs, ...laneQueueNames(names).filter((name) => name !== names.jobs)] : [names.jobs];
  for (const name of queues) {
    await declare(`queue "${name}"`, () => channel.assertQueue(name, { durable: true, arguments: jobQueueArguments(names, deliveryLimit) }));
  }
  // Classic, not quorum: a quorum queue raises `x-delivery-count` on every read-and-return
  // (measured on 3.10: +1 per browse), so reading dead letters would change them.
  try {
    await declare(`queue "${names.deadLetters}"`, () =>
      channel.assertQueue(names.deadLetters, { durable: true, arguments: { "x-queue-type": "classic" } }),
    );
  } catch (error) {
    // On a cluster, a classic queue lives on one node: while that node is down RabbitMQ refuses
    // to declare it anywhere (404 "home node … is down"). It exists, and the job queue's
    // at-least-once dead-lettering keeps dead letters until it can take them, so this must not
    // keep every process from (re)connecting to the nodes still up.
    if (!isHomeNodeDown(error)) throw error;
  }
}

/** Whether `error` is RabbitMQ refusing a durable classic queue whose node is down. @internal */
export function isHomeNodeDown(error: unknown): boolean {
  const e = error as { message?: unknown; cause?: { message?: unknown } } | undefined;
  return /home node .* is down or inaccessible/.test(`${String(e?.message ?? "")} ${String(e?.cause?.message ?? "")}`);
}

/**
 * The binding key of a level's exchange that matches messages whose bit `level` is `bit`: the
 * routing key's first {@link DELAY_LEVELS} words are the delay's bits, highest first. @internal
 */
export function delayLevelBindingKey(level: number, bit: 0 | 1): string {
  return `${"*.".repeat(DELAY_LEVELS - 1 - level)}${bit}.#`;
}

/**
 * Declares one level of the delay cascade: its topic exchange, the one below (or `due`), its
 * queue (every message in it has the same TTL, `2^level` ms, so it expires in FIFO order with no
 * head-of-line blocking, then is dead-lettered, routing key kept, to the next level down), and
 * the two bindings of the exchange: bit set, to the queue; bit clear, straight to the next level.
 * @internal
 */
export async function declareDelayLevel(channel: Channel, names: AmqpTopologyNames, level: number): Promise<void> {
  const exchange = delayExchangeName(names, level);
  const queue = delayQueueName(names, level);
  const next = level === 0 ? delayDueExchangeName(names) : delayExchangeName(names, level - 1);
  await declare(`exchange "${exchange}"`, () => channel.assertExchange(exchange, "topic", { durable: true }));
  // The next one down too, so that levels can be declared in any order, all at once.
  await declare(`exchange "${next}"`, () => channel.assertExchange(next, "topic", { durable: true }));
  await declare(`queue "${queue}"`, () =>
    channel.assertQueue(queue, {
      durable: true,
      arguments: {
        "x-queue-type": "quorum",
        "x-message-ttl": 2 ** level,
        "x-dead-letter-exchange": next,
        // At least once: an expired message stays here until the next level confirmed it.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
      },
    }),
  );
  await declare(`binding of "${queue}" to "${exchange}"`, () => channel.bindQueue(queue, exchange, delayLevelBindingKey(level, 1)));
  await declare(`binding of "${next}" to "${exchange}"`, () => channel.bindExchange(next, exchange, delayLevelBindingKey(level, 0)));
}

/**
 * Declares the exchange delayed messages leave the cascade by, and binds `destination` (a queue,
 * or an exchange) to it for the messages addressed to it (see `delayRoutingKey`). @internal
 */
export async function declareDelayDestination(channel: Channel, names: AmqpTopologyNames, destination: { queue?: string; exchange?: string }): Promise<void> {
  const due = delayDueExchangeName(names);
  await declare(`exchange "${due}"`, () => channel.assertExchange(due, "topic", { durable: true }));
  const target = destination.queue ?? destination.exchange ?? "";
  const key = `#.${delayDestinationWord(target)}`;
  await declare(`binding of "${target}" to "${due}"`, () =>
    destination.queue !== undefined ? channel.bindQueue(target, due, key) : channel.bindExchange(target, due, key),
  );
}

/**
 * The last word(s) of a delayed message's routing key, naming where it goes once due: the
 * destination's name when it is a safe topic key of at most 180 characters (the routing key
 * stays under AMQP's 255 bytes), else `~` and a hash. @internal
 */
export function delayDestinationWord(destination: string): string {
  if (destination.length <= 180 && plainKey.test(destination)) return destination;
  return `~${createHash("sha256").update(destination).digest("base64url").slice(0, 32)}`;
}

/**
 * The routing key of a message delayed `delayMs` (an integer from 0 to 2^33 - 1) on its way to
 * `destination`: the delay's {@link DELAY_LEVELS} bits, highest first, then the destination word.
 * @internal
 */
export function delayRoutingKey(delayMs: number, destination: string): string {
  const words: string[] = [];
  for (let level = DELAY_LEVELS - 1; level >= 0; level--) words.push(Math.floor(delayMs / 2 ** level) % 2 === 1 ? "1" : "0");
  return `${words.join(".")}.${delayDestinationWord(destination)}`;
}

/** The highest level whose bit is set in `delayMs` (>= 1): where a delayed message enters the cascade. @internal */
export function delayEntryLevel(delayMs: number): number {
  let level = 0;
  while (2 ** (level + 1) <= delayMs) level++;
  return level;
}

/** Name of the queue of one concurrency key. @internal */
export function keyQueueName(names: AmqpTopologyNames, key: string): string {
  return `${names.keysPrefix}.${concurrencyKeyHash(key)}`;
}

/**
 * Declares the queue of one concurrency key: a quorum queue like the job queue (same delivery
 * limit and dead-lettering) with a single active consumer, so that of all the dispatchers
 * consuming it only one holds its deliveries at a time; its prefetch is the key's limit plus
 * one (the job next in line). `x-expires`: the broker deletes it once it has had no consumer
 * and no declaration for `expiresMs` (dispatchers stop consuming a key idle everywhere, see
 * `AmqpKeyConsumer`).
 * @internal
 */
export async function declareKeyQueue(channel: Channel, names: AmqpTopologyNames, key: string, deliveryLimit: number, expiresMs: number): Promise<string> {
  const name = keyQueueName(names, key);
  await declare(`queue "${name}" (concurrency key "${key}")`, () =>
    channel.assertQueue(name, { durable: true, arguments: { ...jobQueueArguments(names, deliveryLimit), "x-single-active-consumer": true, "x-expires": expiresMs } }),
  );
  return name;
}

/** How long the key log keeps an entry; keys in use are announced again well within it. @internal */
export const KEY_LOG_RETENTION_MS = 7 * 24 * 60 * 60 * 1000;

/** Declares the stream of concurrency keys in use. @internal */
export async function declareKeyLog(channel: Channel, names: AmqpTopologyNames): Promise<void> {
  await declare(`stream "${names.keyLog}"`, () =>
    channel.assertQueue(names.keyLog, {
      durable: true,
      arguments: { "x-queue-type": "stream", "x-max-age": maxAge(KEY_LOG_RETENTION_MS), "x-stream-max-segment-size-bytes": 1024 * 1024 },
    }),
  );
}

/** Seconds of a retention in the `x-max-age` form (`"86400s"`). */
function maxAge(retentionMs: number): string {
  return `${Math.max(1, Math.ceil(retentionMs / 1000))}s`;
}

/**
 * Declares the events exchange, the cancel exchange and the cancel log stream bound to it.
 * @internal
 */
export async function declareEventTopology(channel: Channel, names: AmqpTopologyNames, cancelRetentionMs: number): Promise<void> {
  await declare(`exchange "${names.events}"`, () => channel.assertExchange(names.events, "topic", { durable: true }));
  await declare(`exchange "${names.cancels}"`, () => channel.assertExchange(names.cancels, "fanout", { durable: true }));
  await declare(`stream "${names.cancelLog}"`, () =>
    channel.assertQueue(names.cancelLog, {
      durable: true,
      arguments: {
        "x-queue-type": "stream",
        // Segments are dropped once all their records are older than this, so records live at
        // least this long; small segments keep the overshoot small.
        "x-max-age": maxAge(cancelRetentionMs),
        "x-stream-max-segment-size-bytes": 8 * 1024 * 1024,
      },
    }),
  );
  await declare(`binding of "${names.cancelLog}" to "${names.cancels}"`, () => channel.bindQueue(names.cancelLog, names.cancels, ""));
}
