/**
 * The processes of a chaos run and the handles the fault scheduler acts on: worker processes
 * (`serveWorker` via `test/helpers/worker-process.ts`, restartable on the same port), dispatcher
 * processes (bench child protocol, each reaching the broker through its own `TcpProxy`, one per
 * node on a RabbitMQ cluster), the producer, and with `brokers` the private RabbitMQ nodes.
 * `close()` takes all of it down, whatever state it is in.
 */
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { startWorkerProcess, type WorkerProcess } from "../../test/helpers/worker-process.ts";
import type { RabbitMqNodes } from "../../src/testing/broker/rabbitmq-nodes.ts";
import { TcpProxy } from "../../src/testing/tcp-proxy.ts";
import { startChild, type ChildHandle } from "../lib/proc.ts";
import { AMQP_URL } from "../lib/rabbit.ts";
import { dispatcherLogName } from "./log.ts";

/** A worker's place in the run: its port stays, its process changes on restart. */
export interface WorkerSlot {
  readonly index: number;
  readonly name: string;
  port: number;
  process: WorkerProcess | undefined;
  state: "up" | "frozen" | "down";
  /** Every process that held this slot: pid → name lookups of the analysis. */
  readonly pids: number[];
}

/** A dispatcher's place in the run: its proxies stay, its process changes on restart. */
export interface DispatcherSlot {
  readonly index: number;
  readonly name: string;
  /** Its links to the broker: one proxy, or one per node of a cluster (a cut or black hole acts on all). */
  readonly proxies: TcpProxy[];
  child: ChildHandle | undefined;
  /** 1 for the first process, 2 after one restart, … */
  incarnation: number;
  state: "up" | "down";
  link: "ok" | "blackholed";
  /** When the last fault on this dispatcher ended (epoch ms). */
  quietSince: number;
}

/** Sizes and names of a chaos deployment. */
export interface ClusterOptions {
  queue: string;
  logDir: string;
  workers: number;
  /** Slots each worker process serves. */
  workerSlots: number;
  dispatchers: number;
  /** AMQP heartbeat of the dispatchers' connections, in seconds. */
  heartbeatSec: number;
  /** A private RabbitMQ cluster to run on instead of the machine's broker (its nodes are faulted too). */
  brokers?: RabbitMqNodes;
}

/** A node of the private cluster and what the fault scheduler did to it. */
export interface NodeSlot {
  readonly index: number;
  readonly name: string;
  state: "up" | "frozen" | "down";
}

const handlersModule = fileURLToPath(new URL("./handlers.ts", import.meta.url));
const dispatcherScript = new URL("./dispatcher.ts", import.meta.url);

/** A running chaos deployment. */
export class Cluster {
  readonly options: ClusterOptions;
  readonly workers: WorkerSlot[] = [];
  readonly dispatchers: DispatcherSlot[] = [];
  /** The private RabbitMQ nodes (empty on the machine's broker). */
  readonly nodes: NodeSlot[] = [];
  producer: ChildHandle | undefined;
  /** Every process this run started, so a test can check none outlives it. */
  readonly pids: number[] = [];
  readonly #others = new Set<ChildHandle>();

  constructor(options: ClusterOptions) {
    this.options = options;
  }

  /** Starts the proxies, the workers, the producer and the dispatchers (consuming when it resolves). */
  async start(): Promise<void> {
    // The worker processes inherit it (worker-process.ts spawns with this environment).
    process.env.CHAOS_LOG_DIR = this.options.logDir;
    const brokers = this.options.brokers;
    const brokerPorts = brokers ? brokers.nodes.map((n) => n.amqpPort) : [Number(new URL(AMQP_URL).port || 5672)];
    if (brokers) for (const n of brokers.nodes) this.nodes.push({ index: n.index, name: `n${n.index}`, state: "up" });
    for (let i = 0; i < this.options.dispatchers; i++) {
      const proxies = await Promise.all(brokerPorts.map((port) => TcpProxy.start({ port })));
      this.dispatchers.push({ index: i, name: `d${i}`, proxies, child: undefined, incarnation: 0, state: "down", link: "ok", quietSince: 0 });
    }
    for (let i = 0; i < this.options.workers; i++) {
      this.workers.push({ index: i, name: `w${i}`, port: 0, process: undefined, state: "down", pids: [] });
    }
    await Promise.all(this.workers.map((w) => this.startWorker(w)));
    // The producer declares the topology before any dispatcher consumes.
    // On a cluster the producer starts on node 0 and each dispatcher on a node of its own (d0 on
    // node 1, d1 on node 2…): every node serves someone when it is struck.
    const producerArgs = brokers ? ["--urls", brokers.urls.join(",")] : [];
    this.producer = await startChild(new URL("./producer.ts", import.meta.url), { name: "chaos-producer", args: ["--queue", this.options.queue, ...producerArgs] });
    this.#others.add(this.producer);
    this.pids.push(this.producer.pid);
    await Promise.all(this.dispatchers.map((d) => this.startDispatcher(d)));
  }

  /** Starts (or restarts, on the same port) the worker process of `slot`. */
  async startWorker(slot: WorkerSlot): Promise<void> {
    const proc = await startWorkerProcess({ handlersModule, handlersExport: "chaosHandlers", slots: this.options.workerSlots, port: slot.port, gracePeriodMs: 1000 });
    slot.process = proc;
    slot.port = proc.port;
    slot.pids.push(proc.pid);
    this.pids.push(proc.pid);
    slot.state = "up";
  }

  /** Starts a new incarnation of the dispatcher of `slot` and resolves once it consumes. */
  async startDispatcher(slot: DispatcherSlot): Promise<void> {
    const incarnation = slot.incarnation + 1;
    const { options } = this;
    const child = await startChild(dispatcherScript, {
      name: `chaos-dispatcher-${slot.name}#${incarnation}`,
      args: [
        "--name", slot.name,
        "--queue", options.queue,
        "--url", rotate(slot.proxies.map((proxy) => proxy.url(AMQP_URL)), slot.index + 1).join(","),
        "--workers", this.workers.map((w) => `127.0.0.1:${w.port}`).join(","),
        // The workers' slots are shared: each dispatcher gets its part, so together they never
        // assign more jobs to a worker than it has slots.
        "--slots", String(Math.max(1, Math.floor(options.workerSlots / options.dispatchers))),
        "--log", join(options.logDir, dispatcherLogName(slot.name, incarnation)),
        "--heartbeat", String(options.heartbeatSec),
      ],
    });
    slot.child = child;
    slot.incarnation = incarnation;
    this.pids.push(child.pid);
    await child.request("start", {}, 30_000);
    slot.state = "up";
  }

  /** Worker slot name of a pid that ever held one. */
  workerOfPid(pid: number): string | undefined {
    return this.workers.find((w) => w.pids.includes(pid))?.name;
  }

  /** Stops every process (thawing frozen ones first) and closes the proxies. Never rejects. */
  async close(): Promise<void> {
    const stops: Promise<unknown>[] = [];
    for (const d of this.dispatchers) if (d.child) stops.push(d.child.stop(2000));
    for (const c of this.#others) stops.push(c.stop(2000));
    // stop() sends SIGCONT before SIGKILL, so a frozen worker goes too.
    for (const w of this.workers) if (w.process) stops.push(w.process.stop());
    await Promise.allSettled(stops);
    await Promise.allSettled(this.dispatchers.flatMap((d) => d.proxies.map((proxy) => proxy.close())));
  }
}

/** `list` starting at element `start` (modulo its length). */
function rotate<T>(list: readonly T[], start: number): T[] {
  const at = start % list.length;
  return [...list.slice(at), ...list.slice(0, at)];
}
