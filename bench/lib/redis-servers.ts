/**
 * Private Redis servers for the BullMQ baselines: the bench starts one per persistence setting on
 * its own ports (16380-16389), each with its own temporary `--dir`, and stops them (and removes
 * the directories) when the run ends, fails or is interrupted. The machine's own Redis is never
 * used, so every setting is known and all three run in the same rounds.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { registerCleanup } from "./proc.ts";

/** How the server keeps its data: not at all, AOF synced every second, AOF synced before each reply. */
export type RedisPersistence = "none" | "everysec" | "always";

/** Every setting, in the order the bench reports them. */
export const REDIS_PERSISTENCES: readonly RedisPersistence[] = ["none", "everysec", "always"];

/** The redis-server flags of each setting (RDB snapshots off in all three: only the AOF differs). */
export const PERSISTENCE_FLAGS: Record<RedisPersistence, readonly string[]> = {
  none: ["--save", "", "--appendonly", "no"],
  everysec: ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
  always: ["--save", "", "--appendonly", "yes", "--appendfsync", "always"],
};

/** The ports the bench may use for its servers. */
export const BENCH_REDIS_PORTS = { first: 16380, last: 16389 } as const;

/** A redis-server the bench started. */
export interface RedisServer {
  readonly persistence: RedisPersistence;
  readonly port: number;
  readonly pid: number;
  readonly dir: string;
  /** Shuts the server down (SIGTERM, then SIGKILL) and removes its directory. Never rejects. */
  stop(): Promise<void>;
}

const live = new Map<ChildProcess, string>();
registerCleanup(() => {
  for (const [child, dir] of live) {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
  live.clear();
});

/** Whether something answers PING with PONG on 127.0.0.1:`port` within `timeoutMs`. */
export function pingRedis(port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    let reply = "";
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("error", () => done(false));
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.on("data", (data) => {
      reply += data.toString();
      if (reply.includes("\r\n")) done(reply.startsWith("+PONG"));
    });
  });
}

/**
 * Starts a redis-server with `persistence` on the first free port of `ports`, in a fresh temporary
 * directory, and resolves once it answers PING.
 * @throws when redis-server is not installed or no port of the range can be bound.
 */
export async function startRedisServer(persistence: RedisPersistence, ports: readonly number[]): Promise<RedisServer> {
  const failures: string[] = [];
  for (const port of ports) {
    // A port answering already belongs to someone else (another run): never share it.
    if (await pingRedis(port, 200)) {
      failures.push(`${port}: in use`);
      continue;
    }
    const dir = mkdtempSync(join(tmpdir(), `bench-redis-${persistence}-`));
    const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--daemonize", "no", "--logfile", join(dir, "redis.log"), ...PERSISTENCE_FLAGS[persistence]];
    const child = spawn("redis-server", args, { stdio: ["ignore", "ignore", "pipe"] });
    live.set(child, dir);
    let exited: string | undefined;
    let stderr = "";
    child.stderr?.on("data", (d) => (stderr += String(d)));
    const exit = new Promise<void>((resolve) => {
      const ended = (why: string): void => {
        exited ??= why;
        live.delete(child);
        rmSync(dir, { recursive: true, force: true });
        resolve();
      };
      child.once("exit", (code, signal) => ended(`exited (code ${code}, signal ${signal}) ${stderr.trim()}`.trim()));
      child.once("error", (err) => ended(`cannot start redis-server: ${err.message}`));
    });
    const deadline = Date.now() + 5000;
    while (exited === undefined && Date.now() < deadline && !(await pingRedis(port, 200))) await sleep(50);
    if (exited === undefined && Date.now() < deadline) {
      const stop = async (): Promise<void> => {
        if (exited !== undefined) return;
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
        await exit;
        clearTimeout(timer);
      };
      return { persistence, port, pid: child.pid!, dir, stop };
    }
    child.kill("SIGKILL");
    await exit;
    if (exited?.startsWith("cannot start")) throw new Error(exited);
    failures.push(`${port}: ${exited ?? "did not answer PING within 5 s"}`);
  }
  throw new Error(`no private Redis with persistence ${persistence} could start (${failures.join("; ")})`);
}

/**
 * Starts one server per setting on the bench's ports. When one cannot start, the others are
 * stopped and the error rethrown.
 */
export async function startRedisServers(persistences: readonly RedisPersistence[] = REDIS_PERSISTENCES): Promise<Map<RedisPersistence, RedisServer>> {
  const servers = new Map<RedisPersistence, RedisServer>();
  const ports = Array.from({ length: BENCH_REDIS_PORTS.last - BENCH_REDIS_PORTS.first + 1 }, (_, i) => BENCH_REDIS_PORTS.first + i);
  try {
    for (const persistence of persistences) {
      const taken = new Set([...servers.values()].map((s) => s.port));
      servers.set(persistence, await startRedisServer(persistence, ports.filter((p) => !taken.has(p))));
    }
    return servers;
  } catch (err) {
    await Promise.all([...servers.values()].map((s) => s.stop()));
    throw err;
  }
}
