import type { ChannelModel } from "amqplib";

/** Tuning of the socket under an amqplib connection, through internals amqplib does not type. */

/**
 * amqplib's multiplexer writes every frame to the socket separately, so with TCP_NODELAY each
 * publish and each ack costs its own `write` syscall (a fifth of the CPU of a busy dispatcher in a
 * profile). Corking the socket around one pass of the multiplexer sends that pass as one `writev`.
 * Only an optimisation: when amqplib's internals look different, nothing is changed.
 * @internal
 */
export function coalesceWrites(model: ChannelModel): void {
  const connection = model.connection as unknown as { muxer?: { _readIncoming?: () => void }; stream?: { cork?: () => void; uncork?: () => void } };
  const muxer = connection.muxer;
  const stream = connection.stream;
  const pass = muxer?._readIncoming;
  if (!muxer || typeof pass !== "function" || typeof stream?.cork !== "function" || typeof stream.uncork !== "function") return;
  muxer._readIncoming = function corkedPass(this: unknown) {
    stream.cork?.();
    try {
      pass.call(muxer);
    } finally {
      stream.uncork?.();
    }
  };
}

/**
 * Declares the link dead once nothing at all arrived for one heartbeat timeout — the broker
 * sends a heartbeat every half timeout when it has nothing else to send — which is what the
 * broker applies on its side. amqplib's own check waits two to three timeouts; in between, the
 * broker has already put our deliveries back while we would still run their jobs.
 * @internal
 */
export function watchLiveness(model: ChannelModel, heartbeatSec: number): void {
  const timeoutMs = heartbeatSec * 1000;
  const socket = (model.connection as unknown as { stream?: { bytesRead?: number; destroy?: (error: Error) => void } }).stream;
  if (timeoutMs === 0 || typeof socket?.bytesRead !== "number" || typeof socket.destroy !== "function") return;
  let bytes = socket.bytesRead;
  let lastHeard = Date.now();
  const timer = setInterval(() => {
    if (socket.bytesRead !== bytes) {
      bytes = socket.bytesRead as number;
      lastHeard = Date.now();
    } else if (Date.now() - lastHeard > timeoutMs) {
      clearInterval(timer);
      socket.destroy?.(new Error(`Heartbeat timeout: nothing received for ${Date.now() - lastHeard} ms`));
    }
  }, Math.max(50, timeoutMs / 4));
  timer.unref?.();
  model.once("close", () => clearInterval(timer));
}
