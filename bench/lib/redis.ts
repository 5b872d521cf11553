/** Redis connections of the bench (BullMQ baselines): servers on 127.0.0.1 only. */
import { Redis } from "ioredis";

/**
 * Port of the Redis a BullMQ process uses when given none: the machine's (override with
 * BENCH_REDIS_PORT; the host is always 127.0.0.1). `npm run bench` passes the port of its own
 * servers (lib/redis-servers.ts) instead.
 */
export const REDIS_PORT = Number(process.env.BENCH_REDIS_PORT ?? 6379);

/**
 * A new ioredis client for BullMQ. BullMQ 6 loads ioredis only when given a client in native ESM,
 * and its workers need blocking commands without a retry cap (`maxRetriesPerRequest: null`).
 */
export function createRedis(port = REDIS_PORT): Redis {
  const client = new Redis({ host: "127.0.0.1", port, maxRetriesPerRequest: null, lazyConnect: false });
  client.on("error", () => {});
  return client;
}

/** The Redis server's version when it answers on 127.0.0.1 within `timeoutMs`, otherwise `undefined`. */
export async function redisVersion(timeoutMs = 2000, port = REDIS_PORT): Promise<string | undefined> {
  const { connect } = await import("node:net");
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    let reply = "";
    const done = (version: string | undefined): void => {
      socket.destroy();
      resolve(version);
    };
    socket.setTimeout(timeoutMs, () => done(undefined));
    socket.once("error", () => done(undefined));
    socket.once("connect", () => socket.write("INFO server\r\n"));
    socket.on("data", (data) => {
      reply += data.toString();
      const match = /redis_version:([^\r\n]+)/.exec(reply);
      if (match) done(match[1]);
    });
  });
}
