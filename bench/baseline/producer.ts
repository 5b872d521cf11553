/**
 * Producer process for the RabbitMQ paths: publishes no-op job envelopes to a queue on a confirm
 * channel (persistent messages), keeping at most `window` publishes awaiting their confirm, the way
 * a busy API submitting jobs concurrently would; or `stamp` jobs at a fixed rate (`paced`).
 */
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { connect } from "amqplib";
import { serveChild, signalFatal, signalReady } from "../lib/child.ts";
import { nowMs } from "../lib/cpu.ts";
import { AMQP_URL } from "../lib/rabbit.ts";

try {
  // TCP_NODELAY as the product's AmqpConnection sets it, so the two differ by code, not by a socket flag.
  const connection = await connect(AMQP_URL, { noDelay: true });
  connection.on("error", () => {});
  const channel = await connection.createConfirmChannel();
  channel.on("error", (err) => signalFatal(err));

  const publish = async ({ queue, count, window = 256 }: { queue: string; count: number; window?: number }) => {
    let inFlight = 0;
    let sent = 0;
    let confirmed = 0;
    let firstPublishAt = 0;
    await new Promise<void>((resolve, reject) => {
      const pump = (): void => {
        while (sent < count && inFlight < window) {
          const createdAt = new Date().toISOString();
          const envelope = { v: 1, id: randomUUID(), type: "noop", payload: {}, attempt: 1, maxAttempts: 3, timeoutMs: 60_000, createdAt };
          if (sent === 0) firstPublishAt = nowMs();
          sent++;
          inFlight++;
          channel.sendToQueue(queue, Buffer.from(JSON.stringify(envelope)), { persistent: true, contentType: "application/json" }, (err) => {
            inFlight--;
            if (err) {
              reject(new Error(`publish not confirmed: ${String(err)}`));
              return;
            }
            if (++confirmed === count) resolve();
            else pump();
          });
        }
      };
      pump();
    });
    return { firstPublishAt, lastConfirmAt: nowMs() };
  };

  /**
   * Publishes `stamp` jobs open-loop at `ratePerSecond` for `seconds`, each carrying the time of
   * its publish call (`payload.enqueuedAt`), as the product's producer paces `JobClient.submit()`.
   */
  const paced = async ({ queue, ratePerSecond, seconds }: { queue: string; ratePerSecond: number; seconds: number }) => {
    const total = Math.max(1, Math.round(ratePerSecond * seconds));
    const gapMs = 1000 / ratePerSecond;
    const confirms: Promise<void>[] = [];
    const start = nowMs();
    for (let i = 0; i < total; i++) {
      const wait = start + i * gapMs - nowMs();
      if (wait > 1) await sleep(wait);
      const enqueuedAt = nowMs();
      const envelope = { v: 1, id: randomUUID(), type: "stamp", payload: { enqueuedAt }, attempt: 1, maxAttempts: 3, timeoutMs: 60_000, createdAt: new Date().toISOString() };
      confirms.push(
        new Promise<void>((resolve, reject) => {
          channel.sendToQueue(queue, Buffer.from(JSON.stringify(envelope)), { persistent: true, contentType: "application/json" }, (err) =>
            err ? reject(new Error(`publish not confirmed: ${String(err)}`)) : resolve(),
          );
        }),
      );
    }
    await Promise.all(confirms);
    return { sent: total, achievedRate: (total * 1000) / (nowMs() - start) };
  };

  serveChild({ publish, paced }, { onExit: () => connection.close().catch(() => {}) });
  signalReady();
} catch (err) {
  signalFatal(err);
}
