import net from "node:net";
import type { AddressInfo } from "node:net";

/** One client connection and its upstream twin. */
interface Pair {
  client: net.Socket;
  upstream: net.Socket | undefined;
  blackholed: boolean;
}

/**
 * A TCP proxy on 127.0.0.1 for fault tests: forwards every connection to `target`, and on command
 * cuts all of them (`cut()`: both sockets reset at once, as when a process or a NAT entry dies) or
 * black-holes them (`blackhole()`: sockets stay open but nothing is forwarded either way, as on a
 * partitioned network; only heartbeats can notice). `restore()` ends the black hole: black-holed
 * connections are dropped and new ones are forwarded again.
 *
 * Use it between any client and server of a test: a broker, a worker, a database.
 *
 * @example
 * ```ts
 * import { TcpProxy } from "@blacktree/orchestrator/testing";
 * await using proxy = await TcpProxy.start({ port: 5672 });
 * const connection = new AmqpConnection({ url: proxy.url("amqp://guest:guest@127.0.0.1:5672") });
 * proxy.cut();       // both sides reset: reconnects at once
 * proxy.blackhole(); // silence: only heartbeats notice
 * proxy.restore();
 * ```
 */
export class TcpProxy {
  readonly #server: net.Server;
  readonly #target: { host: string; port: number };
  readonly #pairs = new Set<Pair>();
  #blackholed = false;
  /** How many connections were accepted so far. */
  accepted = 0;

  private constructor(server: net.Server, target: { host: string; port: number }) {
    this.#server = server;
    this.#target = target;
  }

  /** Starts a proxy on a free port of 127.0.0.1 forwarding to `target` (host defaults to 127.0.0.1). */
  static async start(target: { host?: string; port: number }): Promise<TcpProxy> {
    const server = net.createServer();
    const proxy = new TcpProxy(server, { host: target.host ?? "127.0.0.1", port: target.port });
    server.on("connection", (client) => proxy.#accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    return proxy;
  }

  /** The port the proxy listens on. */
  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  /** Connections open now. */
  get connections(): number {
    return this.#pairs.size;
  }

  /** `url` with its host and port replaced by the proxy's. */
  url(url: string): string {
    const u = new URL(url);
    u.hostname = "127.0.0.1";
    u.port = String(this.port);
    return u.toString();
  }

  /** Resets every open connection, both sides, at once. New connections are still forwarded. */
  cut(): void {
    for (const pair of [...this.#pairs]) this.#drop(pair);
  }

  /** Stops forwarding on every connection, open and new, without closing anything. */
  blackhole(): void {
    this.#blackholed = true;
    for (const pair of this.#pairs) pair.blackholed = true;
  }

  /** Ends a black hole: drops the black-holed connections; new ones are forwarded again. */
  restore(): void {
    this.#blackholed = false;
    for (const pair of [...this.#pairs]) if (pair.blackholed) this.#drop(pair);
  }

  /** Drops every connection and stops listening. */
  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #accept(client: net.Socket): void {
    this.accepted++;
    const pair: Pair = { client, upstream: undefined, blackholed: this.#blackholed };
    this.#pairs.add(pair);
    // While black-holed, a close on one side is not passed on either (no packet gets through).
    client.on("error", () => this.#closed(pair));
    client.on("close", () => this.#closed(pair));
    // Read and discard while black-holed, so the peer's writes do not back up into an error.
    client.on("data", (chunk) => {
      if (!pair.blackholed) pair.upstream?.write(chunk);
    });
    if (pair.blackholed) return; // never reaches the broker: the handshake hangs, like a dead route
    const upstream = net.connect(this.#target.port, this.#target.host);
    pair.upstream = upstream;
    client.pause();
    upstream.on("connect", () => client.resume());
    upstream.on("data", (chunk) => {
      if (!pair.blackholed) client.write(chunk);
    });
    upstream.on("error", () => this.#closed(pair));
    upstream.on("close", () => this.#closed(pair));
  }

  #closed(pair: Pair): void {
    if (!pair.blackholed) this.#drop(pair);
  }

  #drop(pair: Pair): void {
    if (!this.#pairs.delete(pair)) return;
    pair.client.resetAndDestroy();
    pair.upstream?.resetAndDestroy();
  }
}
