import net from "node:net";
import type { AddressInfo } from "node:net";

/** Options of {@link PingPolicyProxy.start}. */
export interface PingPolicyProxyOptions {
  /** Port of the h2c (plaintext HTTP/2) server on 127.0.0.1 behind the proxy. */
  port: number;
  /** A client PING sooner than this after the last one, with no DATA or HEADERS sent back in between, is a strike. */
  minTimeMs: number;
  /** Strikes allowed; the next one draws the GOAWAY. @default 2 (gRPC-Go, C-core) */
  maxStrikes?: number;
}

const PREFACE_BYTES = 24;
const FRAME_HEADER_BYTES = 9;
const DATA = 0x0;
const HEADERS = 0x1;
const PING = 0x6;
const GOAWAY = 0x7;
const ACK = 0x1;
const ENHANCE_YOUR_CALM = 0xb;

/**
 * A TCP proxy in front of an h2c server that enforces a keepalive ping policy the way gRPC-Go's
 * `keepalive.EnforcementPolicy` and C-core's `min_recv_ping_interval_without_data` do (grpc-js's
 * server enforces none): a client PING less than `minTimeMs` after the previous one, with no
 * DATA or HEADERS frame sent to the client since, is a strike; past `maxStrikes` it sends the
 * client GOAWAY ENHANCE_YOUR_CALM with debug data `too_many_pings` and closes the connection.
 * It reads both directions frame by frame, so the GOAWAY goes out between whole frames.
 */
export class PingPolicyProxy {
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  /** How many connections it closed with `too_many_pings`. */
  goaways = 0;
  /** How many PINGs (not ACKs) clients sent so far, on all connections. */
  pings = 0;

  private constructor(server: net.Server) {
    this.#server = server;
  }

  static async start(options: PingPolicyProxyOptions): Promise<PingPolicyProxy> {
    const maxStrikes = options.maxStrikes ?? 2;
    const server = net.createServer();
    const proxy = new PingPolicyProxy(server);
    server.on("connection", (client) => proxy.#pair(client, options.port, options.minTimeMs, maxStrikes));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return proxy;
  }

  /** `127.0.0.1:<port>` of the proxy. */
  get address(): string {
    return `127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  #pair(client: net.Socket, port: number, minTimeMs: number, maxStrikes: number): void {
    const upstream = net.connect(port, "127.0.0.1");
    for (const socket of [client, upstream]) {
      this.#sockets.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => {
        this.#sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    let lastPingAt = -Infinity;
    let strikes = 0;
    let lastStreamId = 0;
    let closed = false;
    const goaway = () => {
      closed = true;
      this.goaways++;
      const debug = Buffer.from("too_many_pings", "ascii");
      const frame = Buffer.alloc(FRAME_HEADER_BYTES + 8 + debug.length);
      frame.writeUIntBE(8 + debug.length, 0, 3);
      frame[3] = GOAWAY;
      frame.writeUInt32BE(lastStreamId, FRAME_HEADER_BYTES);
      frame.writeUInt32BE(ENHANCE_YOUR_CALM, FRAME_HEADER_BYTES + 4);
      debug.copy(frame, FRAME_HEADER_BYTES + 8);
      upstream.destroy();
      client.end(frame);
    };
    frames(client, PREFACE_BYTES, (type, flags, streamId, frame) => {
      if (closed) return;
      if (streamId > lastStreamId) lastStreamId = streamId;
      if (type === PING && (flags & ACK) === 0) {
        this.pings++;
        const now = performance.now();
        if (now - lastPingAt < minTimeMs && ++strikes > maxStrikes) return goaway();
        lastPingAt = now;
      }
      upstream.write(frame);
    });
    frames(upstream, 0, (type, _flags, _streamId, frame) => {
      if (closed) return;
      if (type === DATA || type === HEADERS) {
        strikes = 0;
        lastPingAt = -Infinity;
      }
      client.write(frame);
    });
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Calls `onFrame` with each whole HTTP/2 frame read from `socket`, after `skip` bytes passed on as one chunk. */
function frames(socket: net.Socket, skip: number, onFrame: (type: number, flags: number, streamId: number, frame: Buffer) => void): void {
  let buffered = Buffer.alloc(0);
  let preface = skip;
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    if (preface > 0) {
      if (buffered.length < preface) return;
      onFrame(-1, 0, 0, buffered.subarray(0, preface));
      buffered = buffered.subarray(preface);
      preface = 0;
    }
    while (buffered.length >= FRAME_HEADER_BYTES) {
      const size = FRAME_HEADER_BYTES + buffered.readUIntBE(0, 3);
      if (buffered.length < size) return;
      const frame = buffered.subarray(0, size);
      buffered = buffered.subarray(size);
      onFrame(frame[3]!, frame[4]!, frame.readUInt32BE(5) & 0x7fffffff, frame);
    }
  });
}
