/**
 * Every name this SDK gives its spans, span events, attributes and metrics: the one place to
 * change when the OpenTelemetry semantic conventions rename something (the messaging conventions
 * are still "Development"; these follow semconv 1.45, where RabbitMQ attributes moved from
 * `messaging.rabbitmq.*` to `rabbitmq.*` and `messaging.system` became `messaging.system.name`).
 * Names of our own are under `blacktree.`.
 * @internal
 */

/** Instrumentation scope of every tracer and meter. */
export const SCOPE_NAME = "@blacktree/orchestrator";

/** Span names; `{queue}` is the queue (destination) name, `{type}` the job type. */
export const SPAN = {
  /** PRODUCER span around `JobClient.submit()`. */
  send: (queue: string): string => `send ${queue}`,
  /** CONSUMER span of one delivery in a dispatcher, from receipt to settle. */
  process: (queue: string): string => `process ${queue}`,
  /** CLIENT span of one attempt's trip to a worker. */
  execute: (type: string): string => `execute ${type}`,
  /** SERVER span on the worker, active while the handler runs. */
  handle: (type: string): string => `handle ${type}`,
} as const;

/** Attribute keys. */
export const ATTR = {
  messagingSystem: "messaging.system.name",
  messagingOperationName: "messaging.operation.name",
  messagingOperationType: "messaging.operation.type",
  messagingDestination: "messaging.destination.name",
  messagingMessageId: "messaging.message.id",
  rabbitmqRoutingKey: "rabbitmq.destination.routing_key",
  errorType: "error.type",
  jobType: "blacktree.job.type",
  jobAttempt: "blacktree.job.attempt",
  jobOutcome: "blacktree.job.outcome",
  workerId: "blacktree.worker.id",
  workerState: "blacktree.worker.state",
  slotState: "blacktree.slot.state",
  cancelReason: "blacktree.cancel.reason",
  retryDelayMs: "blacktree.retry.delay_ms",
  deferReason: "blacktree.defer.reason",
  healthOutcome: "blacktree.health.outcome",
  /** What a connection figure is about: `rabbitmq` (AmqpConnection) or `grpc` (GrpcTransport's worker sessions). */
  connectionKind: "blacktree.connection.kind",
} as const;

/** Values of `messaging.operation.type`. */
export const OPERATION = { send: "send", process: "process", settle: "settle" } as const;

/** Span event names. */
export const EVENT = {
  /** The attempt failed and the job goes back to the queue for another. */
  retry: "blacktree.job.retry",
  /** A cancel reached the job (queued: it never starts; running: its worker call is aborted). */
  cancel: "blacktree.job.cancel",
  /** The worker running the attempt was lost (evicted as unhealthy, removed, or its connection broke). */
  evict: "blacktree.worker.evicted",
  /** The attempt ran past its deadline. */
  timeout: "blacktree.job.timeout",
  /** The job went back to the queue without using an attempt. */
  defer: "blacktree.job.deferred",
  /** The job went to the dead-letter queue. */
  deadLetter: "blacktree.job.dead_lettered",
  /** The queue took the delivery away before it was settled. */
  abandon: "blacktree.job.abandoned",
} as const;

/** Metric names; units are UCUM (`s` for every duration). */
export const METRIC = {
  /** semconv: messages the producer sent (`JobClient.submit()`), counter. */
  sentMessages: "messaging.client.sent.messages",
  /** semconv: duration of a send (submit to the broker's confirm) or a settle (ack, retry, dead letter), histogram, s. */
  operationDuration: "messaging.client.operation.duration",
  /** semconv: messages delivered to a dispatcher, counter. */
  consumedMessages: "messaging.client.consumed.messages",
  /** semconv: duration of processing one delivery (receipt to settle), histogram, s. */
  processDuration: "messaging.process.duration",
  /** One attempt on a worker, from hand-over to its end, by type and outcome; histogram, s. */
  jobDuration: "blacktree.job.duration",
  /** From the first submit to the first attempt's start; histogram, s. */
  queueWait: "blacktree.job.queue_wait",
  /** Attempts running on workers now; up-down counter. */
  jobsActive: "blacktree.jobs.active",
  /** Attempts that failed and went back for another; counter. */
  retries: "blacktree.job.retries",
  /** Jobs a dispatcher moved to the dead-letter queue; counter. */
  deadLetters: "blacktree.job.dead_letters",
  /** From a cancel command to the job's `cancelled` outcome; histogram, s. */
  cancelLatency: "blacktree.job.cancel_latency",
  /** Slots of the pool's workers by state (free, busy, unavailable); gauge. */
  workerSlots: "blacktree.worker.slots",
  /** Workers of the pool by state; gauge. */
  workers: "blacktree.workers",
  /** One health check of a worker, by outcome; histogram, s. */
  healthCheckDuration: "blacktree.health_check.duration",
  /** Worker side: one handler run, from its start to the attempt's outcome, by type and outcome; histogram, s. */
  handlerDuration: "blacktree.handler.duration",
  /** Worker side: handlers running now, by type; up-down counter. */
  handlersActive: "blacktree.handlers.active",
  /** Worker side: the worker's own slots by state (free, busy, stuck: aborted handlers still running); gauge. */
  handlerSlots: "blacktree.handler.slots",
  /** Connections open now (broker connections, worker sessions), by kind; up-down counter. */
  connectionsOpen: "blacktree.connections.open",
  /** Lost connections that came back, by kind; counter. */
  reconnects: "blacktree.connection.reconnects",
  /** From a connection's loss to its return, by kind; histogram, s. */
  downtime: "blacktree.connection.downtime",
  /** Round trip of a liveness ping on a worker's job stream; histogram, s. */
  pingDuration: "blacktree.transport.ping.duration",
} as const;
