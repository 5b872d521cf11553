import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { OrchestratorError } from "../../errors.ts";

/**
 * Lifecycle of a {@link RabbitMqNode}'s process:
 * - `running`: started (it may still be booting until `start()` resolves);
 * - `frozen`: stopped with SIGSTOP; holds its sockets but answers nothing;
 * - `down`: its process has exited (killed, stopped, crashed); `start()` runs it again on the same data.
 */
export type RabbitMqNodeState = "running" | "frozen" | "down";

/** Where a private node lives and how it is reached. @internal */
export interface RabbitMqNodeSpec {
  /** Erlang node name, `name@localhost`. */
  name: string;
  /** Its own directory: HOME (with the cookie), data, logs, config. */
  dir: string;
  amqpPort: number;
  distPort: number;
  /** Directory of `rabbitmq-server` and `rabbitmqctl` (the real scripts, not the /usr/sbin wrappers). */
  binDir: string;
  cookie: string;
}

/** The node name of the machine's own broker, which a private node must never be. */
const SHARED_NODE = /^rabbit@/;

/** Every node process of this process still alive, killed if the process exits without stopping them. */
const living = new Set<ChildProcess>();
let exitHookInstalled = false;
function killOnExit(child: ChildProcess): void {
  living.add(child);
  child.once("exit", () => living.delete(child));
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const node of living) {
      try {
        process.kill(node.pid as number, "SIGCONT");
        process.kill(node.pid as number, "SIGKILL");
      } catch {
        // already gone
      }
    }
  });
}

/**
 * Ports below the kernel's ephemeral range (Linux: 32768-60999): an outgoing connection never
 * takes one of them, so a port found free stays free until the node binds it, and again when a
 * killed node restarts on it. A port from `listen(0)` is an ephemeral one, and a restart 10 s
 * later found it taken by a client connection (`eaddrinuse`, seen in a chaos run).
 */
const STABLE_PORTS = { from: 20_000, to: 32_000 } as const;

/** Binds `port` on 127.0.0.1 and frees it: whether nothing listens there now. */
function canBind(port: number): Promise<boolean> {
  const server = net.createServer();
  return new Promise<boolean>((resolve) => {
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/**
 * A free TCP port on 127.0.0.1 below the ephemeral range (free now; a node binds it a moment
 * later), or an ephemeral one when 100 random tries found none. @internal
 */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const port = STABLE_PORTS.from + Math.floor(Math.random() * (STABLE_PORTS.to - STABLE_PORTS.from));
    if (await canBind(port)) return port;
  }
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * One private RabbitMQ node process: its own node name, ports, data and log directories, config,
 * plugins file and `HOME` holding its own `.erlang.cookie`, so it runs beside the machine's broker
 * without touching it (and `rabbitmqctl` run with its `HOME` cannot reach the machine's broker,
 * whose cookie differs). The process id is the Erlang VM's own (the start script `exec`s it), so
 * `kill()`, `freeze()` and `thaw()` act on the broker itself.
 * @internal (used through {@link RabbitMqNodes})
 */
export class RabbitMqNode {
  readonly spec: RabbitMqNodeSpec;
  #child: ChildProcess | undefined;
  #state: RabbitMqNodeState = "down";
  #exited: Promise<void> = Promise.resolve();

  constructor(spec: RabbitMqNodeSpec) {
    if (SHARED_NODE.test(spec.name)) throw new OrchestratorError("invalid_argument", `a private node must not be named like the machine's broker, got \`${spec.name}\``);
    this.spec = spec;
    const { dir } = spec;
    for (const sub of ["home", "data", "log"]) mkdirSync(join(dir, sub), { recursive: true });
    const cookie = join(dir, "home", ".erlang.cookie");
    if (!existsSync(cookie)) {
      writeFileSync(cookie, spec.cookie);
      chmodSync(cookie, 0o400);
    }
    writeFileSync(join(dir, "rabbitmq.conf"), [`listeners.tcp.1 = 127.0.0.1:${spec.amqpPort}`, "loopback_users = none", ""].join("\n"));
    writeFileSync(join(dir, "enabled_plugins"), "[].\n");
    // The system's rabbitmq-env.conf pins the node name: point the scripts at an empty one.
    writeFileSync(join(dir, "rabbitmq-env.conf"), "");
  }

  /** Resolves when the current process has exited, keeping the event loop alive meanwhile (the child is unref'd). */
  #untilExited(): Promise<void> {
    const hold = setInterval(() => {}, 1000);
    return this.#exited.finally(() => clearInterval(hold));
  }

  get state(): RabbitMqNodeState {
    return this.#state;
  }

  /** The broker's process id while it runs. */
  get pid(): number | undefined {
    return this.#state === "down" ? undefined : this.#child?.pid;
  }

  /** `amqp://guest:guest@127.0.0.1:<port>` */
  get url(): string {
    return `amqp://guest:guest@127.0.0.1:${this.spec.amqpPort}`;
  }

  /** The environment of this node's scripts (server and CLI). */
  #env(): NodeJS.ProcessEnv {
    const { dir, name } = this.spec;
    return {
      PATH: process.env.PATH,
      LANG: "C.UTF-8",
      HOME: join(dir, "home"),
      RABBITMQ_NODENAME: name,
      RABBITMQ_NODE_PORT: String(this.spec.amqpPort),
      RABBITMQ_DIST_PORT: String(this.spec.distPort),
      RABBITMQ_MNESIA_BASE: join(dir, "data"),
      RABBITMQ_LOG_BASE: join(dir, "log"),
      RABBITMQ_CONFIG_FILE: join(dir, "rabbitmq.conf"),
      RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, "enabled_plugins"),
      RABBITMQ_CONF_ENV_FILE: join(dir, "rabbitmq-env.conf"),
      // The CLI's own distribution listener: any free port, not the shared 35672-35682 range.
      RABBITMQ_CTL_DIST_PORT_MIN: "0",
      RABBITMQ_CTL_DIST_PORT_MAX: "0",
      // Exec the VM in place of the script (no signal-forwarding shell in between), without a shell on stdin.
      RABBITMQ_ALLOW_INPUT: "true",
      // Distribution on loopback only, like the machine's broker.
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: "-noinput -kernel inet_dist_use_interface {127,0,0,1}",
    };
  }

  /** Spawns the node process (no wait: see {@link RabbitMqNodes} for waiting until it answers). */
  spawn(): void {
    if (this.#state !== "down") throw new OrchestratorError("precondition_failed", `node ${this.spec.name} is already ${this.#state}`);
    const out = openSync(join(this.spec.dir, "log", "console.log"), "a");
    const child = spawn(join(this.spec.binDir, "rabbitmq-server"), [], { env: this.#env(), stdio: ["ignore", out, out], detached: true });
    closeSync(out);
    child.unref();
    this.#child = child;
    this.#state = "running";
    killOnExit(child);
    this.#exited = new Promise<void>((resolve) => {
      child.once("exit", () => {
        if (this.#child === child) this.#state = "down";
        resolve();
      });
      child.once("error", () => {
        if (this.#child === child) this.#state = "down";
        resolve();
      });
    });
  }

  /** Sends `signal` to the broker process. */
  signal(signal: NodeJS.Signals): void {
    const pid = this.pid;
    if (pid === undefined) throw new OrchestratorError("precondition_failed", `node ${this.spec.name} is not running`);
    process.kill(pid, signal);
    if (signal === "SIGSTOP") this.#state = "frozen";
    if (signal === "SIGCONT" && this.#state === "frozen") this.#state = "running";
  }

  /** `kill -9` and wait until the process is gone. */
  async kill(): Promise<void> {
    if (this.#state === "down") return;
    const exited = this.#untilExited();
    try {
      process.kill(this.#child?.pid as number, "SIGKILL");
      process.kill(this.#child?.pid as number, "SIGCONT");
    } catch {
      // exited meanwhile
    }
    await exited;
  }

  /** Stops the node: SIGTERM (a clean shutdown), SIGKILL after `graceMs`. Resolves when it is gone. */
  async stop(graceMs = 15_000): Promise<void> {
    if (this.#state === "down") return;
    if (this.#state === "frozen") this.signal("SIGCONT");
    const exited = this.#untilExited();
    try {
      process.kill(this.#child?.pid as number, "SIGTERM");
    } catch {
      return;
    }
    const timer = setTimeout(() => void this.kill(), graceMs);
    await exited;
    clearTimeout(timer);
  }

  /**
   * Runs `rabbitmqctl -n <this node>` with this node's `HOME` (its cookie) and returns stdout.
   * @throws {OrchestratorError} `unavailable` with the command's output when it fails.
   */
  ctl(args: readonly string[], timeoutMs = 120_000): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(join(this.spec.binDir, "rabbitmqctl"), ["-n", this.spec.name, ...args], { env: this.#env(), timeout: timeoutMs }, (error, stdout, stderr) => {
        if (!error) return resolve(stdout);
        reject(new OrchestratorError("unavailable", `rabbitmqctl ${args.join(" ")} on ${this.spec.name} failed: ${`${stderr}${stdout}`.trim().slice(0, 2000)}`, { cause: error }));
      });
    });
  }
}
