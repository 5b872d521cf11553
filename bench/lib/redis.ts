/** Redis connections of the bench (BullMQ baseline): the local server only. */
import { Redis } from "ioredis";

/** Port of the local Redis the BullMQ baseline uses (override with BENCH_REDIS_PORT; the host is always 127.0.0.1). */
export const REDIS_PORT = Number(process.env.BENCH_REDIS_PORT ?? 6379);

/**
 * A new ioredis client for BullMQ. BullMQ 6 loads ioredis only when given a client in native ESM,
 * and its workers need blocking commands without a retry cap (`maxRetriesPerRequest: null`).
 */
export function createRedis(): Redis {
  const client = new Redis({ host: "127.0.0.1", port: REDIS_PORT, maxRetriesPerRequest: null, lazyConnect: false });
  client.on("error", () => {});
  return client;
}

/** Whether Redis answers PING on 127.0.0.1 within `timeoutMs`. */
export async function redisReachable(timeoutMs = 2000): Promise<boolean> {
  const { connect } = await import("node:net");
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port: REDIS_PORT });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("error", () => done(false));
    socket.once("connect", () => {
      socket.write("PING\r\n");
      socket.once("data", (data) => done(data.toString().startsWith("+PONG")));
    });
  });
}
