/**
 * The messaging system and queue name a span or figure is about, read from the queue object:
 * `AmqpQueue` exposes `names.jobs`; anything else counts as an in-process queue named "jobs".
 * @internal
 */
export interface Destination {
  readonly system: string;
  readonly name: string;
}

export function destinationOf(queue: unknown): Destination {
  const jobs = (queue as { names?: { jobs?: unknown } } | undefined)?.names?.jobs;
  if (typeof jobs === "string") return { system: "rabbitmq", name: jobs };
  const name = (queue as { name?: unknown } | undefined)?.name;
  return { system: "memory", name: typeof name === "string" ? name : "jobs" };
}
