/**
 * Idle section, worker side: one process hosting `count` `serveWorker()` servers (2 slots each by
 * default) on 127.0.0.1, as a build farm's many small workers would look to one orchestrator. The
 * first `proxied` are reached through a `TcpProxy` in this process, so the bench can make one of
 * them silent (`blackhole`: its connection stays open, nothing gets through, as a frozen or
 * partitioned worker) or reset its connection (`cut`: as when its process dies) and time how long
 * the orchestrator takes to notice.
 * Args: none; commands `start`, `blackhole`, `cut`.
 */
import { TcpProxy } from "../../src/testing/tcp-proxy.ts";
import { serveWorker, type WorkerServer } from "../../src/worker/serve-worker.ts";
import { serveChild, signalFatal, signalReady } from "../lib/child.ts";
import { nowMs } from "../lib/cpu.ts";

const servers: WorkerServer[] = [];
const proxies: TcpProxy[] = [];

try {
  serveChild(
    {
      /** Starts the servers; resolves with the address the orchestrator should use for each. */
      start: async ({ count, slots, proxied }: { count: number; slots: number; proxied: number }) => {
        const addresses: string[] = [];
        for (let i = 0; i < count; i++) {
          const server = await serveWorker({
            id: `idle-${i}`,
            host: "127.0.0.1",
            port: 0,
            slots,
            handleSignals: false,
            gracePeriodMs: 100,
            handlers: { noop: async () => null },
          });
          servers.push(server);
          if (i < proxied) {
            const proxy = await TcpProxy.start({ port: server.port });
            proxies.push(proxy);
            addresses.push(`127.0.0.1:${proxy.port}`);
          } else {
            addresses.push(server.address);
          }
        }
        return { addresses };
      },
      /** Silences proxied worker `index`; resolves with the time it did. */
      blackhole: ({ index }: { index: number }) => {
        const at = nowMs();
        proxies[index]!.blackhole();
        return { at };
      },
      /** Resets proxied worker `index`'s connections; resolves with the time it did. */
      cut: ({ index }: { index: number }) => {
        const at = nowMs();
        proxies[index]!.cut();
        return { at };
      },
    },
    {
      onExit: async () => {
        await Promise.all(proxies.map((p) => p.close()));
        await Promise.all(servers.map((s) => s.close({ signal: AbortSignal.timeout(500) })));
      },
    },
  );
  signalReady();
} catch (err) {
  signalFatal(err);
}
