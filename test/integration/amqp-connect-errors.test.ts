import { createServer, type Server } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { contractJob } from "../../src/testing/contracts/queue-contract.ts";
import { rejectionOf } from "../../src/testing/rejection-of.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";

const rabbit = await useRabbitMq();

/** A publish timeout no test waits for: a rejection can only come from the connect failure. */
const NEVER_MS = 600_000;

function listen(onConnection: (socket: import("node:net").Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer(onConnection);
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, port: (server.address() as { port: number }).port })));
}

async function enqueueOnce(url: string): Promise<{ error: unknown; state: string }> {
  const queue = new AmqpQueue({ url, queueName: "test-newcomer-connect", publishTimeoutMs: NEVER_MS, connectTimeoutMs: 5000 });
  try {
    const error = await rejectionOf(queue.enqueue(contractJob()));
    return { error, state: queue.connection.state };
  } finally {
    await queue.close();
  }
}

describe("AmqpConnection: a wrong address fails the first calls at once, saying why", () => {
  it("an address where nothing listens rejects enqueue with unavailable naming the refusal, not after publishTimeoutMs", async () => {
    const { server, port } = await listen(() => {});
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const { error } = await enqueueOnce(`amqp://guest:secret@127.0.0.1:${port}`);
    expect(error).toMatchObject({ code: "unavailable" });
    const message = (error as Error).message;
    expect(message).toContain(`amqp://guest:…@127.0.0.1:${port}`);
    expect(message).toMatch(/ECONNREFUSED/);
    expect(message).toMatch(/no connection yet/);
    expect(message).not.toContain("secret");
  });

  it("a port that is not RabbitMQ rejects enqueue with a message saying it is not an AMQP broker", async () => {
    const { server, port } = await listen((socket) => {
      socket.once("data", () => socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"));
    });
    try {
      const { error } = await enqueueOnce(`amqp://guest:guest@127.0.0.1:${port}`);
      expect(error).toMatchObject({ code: "unavailable", details: { reason: "not_amqp" } });
      expect((error as Error).message).toMatch(/did not answer as an AMQP 0-9-1 broker; is this RabbitMQ's AMQP port/);
    } finally {
      server.close();
    }
  });

  it("a server that closes during the handshake (PostgreSQL, say) gets the same message", async () => {
    const { server, port } = await listen((socket) => socket.once("data", () => socket.destroy()));
    try {
      const { error } = await enqueueOnce(`amqp://guest:guest@127.0.0.1:${port}`);
      expect(error).toMatchObject({ code: "unavailable", details: { reason: "not_amqp" } });
    } finally {
      server.close();
    }
  });

  describe.skipIf(!rabbit.available)("on the broker", () => {
    afterAll(() => rabbit.cleanup());

    it("an unknown virtual host fails with permission_denied for good, not retried forever", async () => {
      const url = new URL(rabbit.url);
      url.pathname = `/test-newcomer-no-such-vhost-${process.pid}`;
      const { error, state } = await enqueueOnce(url.toString());
      expect(error).toMatchObject({ code: "permission_denied", retryable: false, details: { reason: "vhost_refused" } });
      expect((error as Error).message).toMatch(/refused to open the virtual host: it does not exist, or the user has no permission on it/);
      expect(state).toBe("failed");
    });
  });
});
