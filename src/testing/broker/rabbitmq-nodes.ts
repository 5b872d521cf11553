import { randomBytes, randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OrchestratorError } from "../../errors.ts";
import { delay } from "../../signals.ts";
import { checkInteger, checkObject, checkString, optional } from "../../validate.ts";
import { freePort, RabbitMqNode } from "./rabbitmq-node.ts";
import type { RabbitMqNodeState } from "./rabbitmq-node.ts";

export type { RabbitMqNodeState } from "./rabbitmq-node.ts";

/** Options of {@link RabbitMqNodes.start}. */
export interface RabbitMqNodesOptions {
  /** How many nodes to start; more than one are joined into one cluster. @default 1 */
  nodes?: number;
  /**
   * Directory of `rabbitmq-server` and `rabbitmqctl`: the real scripts, not Debian's `/usr/sbin`
   * wrappers (those switch user and pin paths).
   * @default process.env.RABBITMQ_BIN_DIR ?? "/usr/lib/rabbitmq/bin"
   */
  binDir?: string;
  /**
   * Where the nodes keep their data, logs (`<dir>/<index>/log/`) and cookie. A directory given is
   * kept by `close()` (to read the logs after a failure); the default one is deleted.
   * @default a new directory under the OS temp dir
   */
  dir?: string;
  /** Longest wait for the nodes to start and (for a cluster) join; start-up takes ~10-40 s. @default 300_000 */
  timeoutMs?: number;
}

/** A read-only view of one node. */
export interface RabbitMqNodeInfo {
  readonly index: number;
  /** Erlang node name, `bt-<id>-<index>@localhost`. */
  readonly name: string;
  /** `amqp://guest:guest@127.0.0.1:<port>` */
  readonly url: string;
  readonly amqpPort: number;
  /** The broker's process id while it runs. */
  readonly pid: number | undefined;
  readonly state: RabbitMqNodeState;
}

const DEFAULT_BIN_DIR = "/usr/lib/rabbitmq/bin";

/**
 * Private RabbitMQ nodes for fault tests: one node, or a cluster of several, started beside the
 * machine's broker (own node names, ports, data, `HOME` and `.erlang.cookie`) and stopped by their
 * process ids, so a test can `kill -9`, freeze (SIGSTOP), thaw and restart a broker without
 * touching the one everything else uses. Start-up is slow (~10-40 s): start once per test file.
 *
 * Needs a local RabbitMQ installation (`rabbitmq-server`, `rabbitmqctl` and Erlang; see
 * {@link RabbitMqNodes.available}); no root, no systemd.
 *
 * @example
 * ```ts
 * const brokers = await RabbitMqNodes.start({ nodes: 3 });
 * const queue = new AmqpQueue({ url: brokers.urls, queueName: "jobs" });
 * await brokers.kill(await brokers.queueLeader("jobs") ?? 0); // the queue's leader node dies
 * await brokers.restart(0);                                   // …and comes back, rejoining the cluster
 * await brokers.close();
 * ```
 */
export class RabbitMqNodes {
  readonly #nodes: RabbitMqNode[];
  /** The directory `close()` deletes (the one `start()` created). */
  readonly #dir: string | undefined;
  readonly #timeoutMs: number;
  #closing: Promise<void> | undefined;

  private constructor(nodes: RabbitMqNode[], dir: string | undefined, timeoutMs: number) {
    this.#nodes = nodes;
    this.#dir = dir;
    this.#timeoutMs = timeoutMs;
  }

  /** Whether a RabbitMQ installation to start private nodes from is present in `binDir`. */
  static available(binDir: string = process.env.RABBITMQ_BIN_DIR ?? DEFAULT_BIN_DIR): boolean {
    return existsSync(join(binDir, "rabbitmq-server")) && existsSync(join(binDir, "rabbitmqctl"));
  }

  /**
   * Starts the nodes and resolves once each answers (and, for several, once they form one cluster).
   * @throws {OrchestratorError} `invalid_argument` for a bad option; `unavailable` when RabbitMQ is
   * not installed, a node exits while starting (its console log is quoted) or `timeoutMs` passes.
   * Nodes started before the failure are stopped.
   */
  static async start(options: RabbitMqNodesOptions = {}): Promise<RabbitMqNodes> {
    const o = checkObject("options", options);
    const count = optional(o.nodes, 1, (v) => checkInteger("nodes", v, 1, 9));
    const binDir = optional(o.binDir, process.env.RABBITMQ_BIN_DIR ?? DEFAULT_BIN_DIR, (v) => checkString("binDir", v));
    const timeoutMs = optional(o.timeoutMs, 300_000, (v) => checkInteger("timeoutMs", v, 1));
    const given = optional(o.dir, undefined, (v) => checkString("dir", v));
    const dir = given ?? mkdtempSync(join(tmpdir(), "blacktree-rabbitmq-"));
    if (!RabbitMqNodes.available(binDir)) throw new OrchestratorError("unavailable", `RabbitMQ is not installed in ${binDir} (set RABBITMQ_BIN_DIR to the directory of rabbitmq-server and rabbitmqctl)`);
    const id = randomUUID().slice(0, 8);
    const cookie = randomBytes(24).toString("hex").toUpperCase();
    const nodes: RabbitMqNode[] = [];
    for (let index = 0; index < count; index++) {
      nodes.push(new RabbitMqNode({ name: `bt-${id}-${index}@localhost`, dir: join(dir, String(index)), amqpPort: await freePort(), distPort: await freePort(), binDir, cookie }));
    }
    const brokers = new RabbitMqNodes(nodes, given === undefined ? dir : undefined, timeoutMs);
    try {
      for (const node of nodes) node.spawn();
      await Promise.all(nodes.map((node) => brokers.#awaitStartup(node)));
      const seed = nodes[0] as RabbitMqNode;
      // One join at a time: two nodes joining the same seed at once can trip over each other.
      for (const node of nodes.slice(1)) {
        await node.ctl(["stop_app"]);
        await node.ctl(["join_cluster", seed.spec.name]);
        await node.ctl(["start_app"]);
        await brokers.#awaitStartup(node);
      }
    } catch (error) {
      await brokers.close();
      throw error;
    }
    return brokers;
  }

  /** Every node's URL, in index order (the list `AmqpConnection`'s `url` takes). */
  get urls(): string[] {
    return this.#nodes.map((node) => node.url);
  }

  /** A snapshot of every node. */
  get nodes(): RabbitMqNodeInfo[] {
    return this.#nodes.map((_, index) => this.node(index));
  }

  /** A snapshot of node `index`. */
  node(index: number): RabbitMqNodeInfo {
    const node = this.#at(index);
    return { index, name: node.spec.name, url: node.url, amqpPort: node.spec.amqpPort, pid: node.pid, state: node.state };
  }

  /** `kill -9` of node `index`; resolves once its process is gone. Its data stays for `restart()`. */
  async kill(index: number): Promise<void> {
    await this.#at(index).kill();
  }

  /** Freezes node `index` with SIGSTOP: its sockets stay open but it answers nothing (a hung VM, a paused container). */
  freeze(index: number): void {
    this.#at(index).signal("SIGSTOP");
  }

  /** Thaws a frozen node with SIGCONT. */
  thaw(index: number): void {
    this.#at(index).signal("SIGCONT");
  }

  /**
   * Starts node `index` again on its own data (killing it first if it still runs) and resolves once
   * it answers; a cluster member rejoins its cluster by itself.
   * @throws {OrchestratorError} `unavailable` when it does not come back within `timeoutMs`.
   */
  async restart(index: number): Promise<void> {
    const node = this.#at(index);
    await node.kill();
    node.spawn();
    await this.#awaitStartup(node);
  }

  /**
   * Runs `rabbitmqctl -n <node>` against node `index` (with the nodes' private cookie, which the
   * machine's broker does not accept) and returns its stdout.
   * @throws {OrchestratorError} `unavailable` with the command's output when it fails.
   */
  ctl(index: number, ...args: string[]): Promise<string> {
    return this.#at(index).ctl(args);
  }

  /**
   * The index of the node holding the leader of quorum queue `queue`, asked of the first node
   * that answers; `undefined` when no running node knows the queue.
   */
  async queueLeader(queue: string): Promise<number | undefined> {
    for (const node of this.#nodes) {
      if (node.state !== "running") continue;
      try {
        const out = await node.ctl(["list_queues", "name", "leader", "--quiet", "--formatter", "json"], 30_000);
        const rows = JSON.parse(out) as { name: string; leader: string }[];
        const leader = rows.find((row) => row.name === queue)?.leader;
        if (leader === undefined) return undefined;
        const index = this.#nodes.findIndex((n) => n.spec.name === leader);
        return index < 0 ? undefined : index;
      } catch {
        // that node is not answering; ask the next
      }
    }
    return undefined;
  }

  /** Stops every node by its process id (thawing frozen ones) and deletes the directory `start()` created. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.all(this.#nodes.map((node) => node.stop(10_000)));
      if (this.#dir !== undefined) rmSync(this.#dir, { recursive: true, force: true });
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #at(index: number): RabbitMqNode {
    const node = this.#nodes[index];
    if (!node) throw new OrchestratorError("invalid_argument", `Expected a node index from 0 to ${this.#nodes.length - 1}, got \`${index}\``, { details: { field: "index" } });
    return node;
  }

  /** Waits until `node` has booted (its process alive throughout). */
  async #awaitStartup(node: RabbitMqNode): Promise<void> {
    const deadline = Date.now() + this.#timeoutMs;
    let last: unknown;
    for (;;) {
      if (node.state === "down") {
        let console = "";
        try {
          console = readFileSync(join(node.spec.dir, "log", "console.log"), "utf8").slice(-2000);
        } catch {
          // no log yet
        }
        throw new OrchestratorError("unavailable", `RabbitMQ node ${node.spec.name} exited while starting: ${console}`);
      }
      const left = Math.ceil((deadline - Date.now()) / 1000);
      if (left <= 0) throw new OrchestratorError("unavailable", `RabbitMQ node ${node.spec.name} did not start within ${this.#timeoutMs} ms`, { cause: last });
      try {
        // Fails at once until the VM is registered with epmd; then waits for the boot itself.
        await node.ctl(["await_startup", "--timeout", String(left)], (left + 10) * 1000);
        return;
      } catch (error) {
        last = error;
        await delay(500);
      }
    }
  }
}
