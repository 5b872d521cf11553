/**
 * Parent side of benchmark child processes: fork a .ts script with this node, wait for its ready
 * handshake, send it commands over IPC, and make sure it is gone when the bench ends, even on failure.
 */
import { fork, type ChildProcess } from "node:child_process";
import type { ChildMessage, ParentMessage } from "./child.ts";

/**
 * Node flags that make a child write a V8 CPU profile named after `name` on exit, when the bench
 * runs with `--profile` (it sets BENCH_CPU_PROF_DIR); none otherwise.
 */
export function profileFlags(name: string): string[] {
  const dir = process.env.BENCH_CPU_PROF_DIR;
  if (!dir) return [];
  return ["--cpu-prof", "--cpu-prof-dir", dir, "--cpu-prof-name", `${name}-${Date.now()}.cpuprofile`];
}

/** Options of {@link startChild}. */
export interface StartChildOptions {
  /** Name used in errors and logs. */
  name: string;
  args?: string[];
  /** Extra node flags (for example `--expose-gc`). */
  execArgv?: string[];
  env?: NodeJS.ProcessEnv;
  /** Time allowed until the child says it is ready. @default 20000 */
  readyTimeoutMs?: number;
}

/** Exit of a child process. */
export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const live = new Set<ChildProcess>();

/** A running child process speaking the bench IPC protocol. */
export class ChildHandle {
  readonly name: string;
  readonly process: ChildProcess;
  /** What the child sent with its ready message. */
  ready: Record<string, unknown> = {};
  /** Settles when the process has exited. */
  readonly exited: Promise<ChildExit>;
  #nextId = 1;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  readonly #eventListeners = new Set<(event: { name: string; data: unknown }) => void>();
  #exit: ChildExit | undefined;

  constructor(name: string, child: ChildProcess) {
    this.name = name;
    this.process = child;
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        live.delete(child);
        this.#exit = { code, signal };
        for (const [id, p] of this.#pending) {
          clearTimeout(p.timer);
          p.reject(new Error(`${name} exited (code ${code}, signal ${signal}) before answering request ${id}`));
        }
        this.#pending.clear();
        resolve(this.#exit);
      });
    });
    child.on("message", (raw) => this.#onMessage(raw as ChildMessage));
  }

  get pid(): number {
    return this.process.pid ?? -1;
  }

  /** Whether the process has exited. */
  get dead(): boolean {
    return this.#exit !== undefined;
  }

  /** Sends a command and resolves with the child's answer; rejects on its error, its exit or the timeout. */
  request<T = unknown>(cmd: string, args: unknown = {}, timeoutMs = 60_000): Promise<T> {
    if (this.#exit) return Promise.reject(new Error(`${this.name} has exited; cannot run ${cmd}`));
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`${this.name}: ${cmd} took longer than ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      const message: ParentMessage = { type: "request", id, cmd, args };
      this.process.send(message, (err) => {
        if (err) {
          clearTimeout(timer);
          this.#pending.delete(id);
          reject(new Error(`${this.name}: could not send ${cmd}: ${err.message}`));
        }
      });
    });
  }

  /** Calls `listener` with each event the child sends; returns an unsubscribe function. */
  onEvent(listener: (event: { name: string; data: unknown }) => void): () => void {
    this.#eventListeners.add(listener);
    return () => this.#eventListeners.delete(listener);
  }

  /** CPU microseconds (user + system) the child has used since it started, from `process.cpuUsage()`. */
  cpuUs(): Promise<number> {
    return this.request<number>("cpu", {}, 10_000);
  }

  /** Sends `signal` (SIGKILL by default) now. */
  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    if (!this.#exit) this.process.kill(signal);
  }

  /** Asks the child to exit, then SIGKILLs it after `graceMs`. Never rejects. */
  async stop(graceMs = 3000): Promise<ChildExit> {
    if (this.#exit) return this.#exit;
    if (this.process.connected) this.process.send({ type: "exit" } satisfies ParentMessage, () => {});
    const timer = setTimeout(() => this.kill("SIGKILL"), graceMs);
    const exit = await this.exited;
    clearTimeout(timer);
    return exit;
  }

  #onMessage(message: ChildMessage): void {
    if (message.type === "reply") {
      const p = this.#pending.get(message.id);
      if (!p) return;
      this.#pending.delete(message.id);
      clearTimeout(p.timer);
      if (message.ok) p.resolve(message.value);
      else p.reject(new Error(`${this.name}: ${message.error}`));
    } else if (message.type === "event") {
      for (const listener of this.#eventListeners) listener({ name: message.name, data: message.data });
    }
  }
}

/**
 * Forks `script` (a .ts file run by this same node) and resolves once it sent its ready message.
 * The child is killed if it is not ready in time.
 */
export async function startChild(script: string | URL, options: StartChildOptions): Promise<ChildHandle> {
  const child = fork(script, options.args ?? [], {
    execPath: process.execPath,
    execArgv: ["--no-warnings", ...(options.execArgv ?? [])],
    env: options.env ?? process.env,
    stdio: ["ignore", "inherit", "inherit", "ipc"],
    serialization: "advanced",
  });
  live.add(child);
  const handle = new ChildHandle(options.name, child);
  const readyTimeoutMs = options.readyTimeoutMs ?? 20_000;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`${options.name} was not ready within ${readyTimeoutMs} ms`)), readyTimeoutMs);
    const onMessage = (raw: unknown): void => {
      const message = raw as ChildMessage;
      if (message.type === "ready") {
        cleanup();
        handle.ready = message.info;
        resolve();
      } else if (message.type === "fatal") {
        fail(new Error(`${options.name} failed to start: ${message.error}`));
      }
    };
    const onExit = (code: number | null, signal: string | null): void =>
      fail(new Error(`${options.name} exited (code ${code}, signal ${signal}) before it was ready`));
    function cleanup(): void {
      clearTimeout(timer);
      child.off("message", onMessage);
      child.off("exit", onExit);
    }
    function fail(error: Error): void {
      cleanup();
      child.kill("SIGKILL");
      reject(error);
    }
    child.on("message", onMessage);
    child.on("exit", onExit);
  });
  return handle;
}

/** Starts several children at once; if one fails, the others are stopped and the error rethrown. */
export async function startChildren(specs: { script: string | URL; options: StartChildOptions }[]): Promise<ChildHandle[]> {
  const settled = await Promise.allSettled(specs.map((s) => startChild(s.script, s.options)));
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed) {
    await stopAll(settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : [])));
    throw failed.reason;
  }
  return settled.map((s) => (s as PromiseFulfilledResult<ChildHandle>).value);
}

/** Stops every handle given (graceful, then SIGKILL). Never rejects. */
export async function stopAll(handles: readonly ChildHandle[], graceMs = 3000): Promise<void> {
  await Promise.all(handles.map((h) => h.stop(graceMs)));
}

const cleanups: Array<() => void> = [];

/**
 * Registers a synchronous cleanup that {@link killAllChildren} runs too: for processes started
 * outside this module (the private Redis servers) and what they leave on disk.
 */
export function registerCleanup(cleanup: () => void): void {
  cleanups.push(cleanup);
}

/** SIGKILLs every child still alive and runs the registered cleanups; for exit and signal handlers of the bench runner. */
export function killAllChildren(): void {
  for (const child of live) child.kill("SIGKILL");
  live.clear();
  for (const cleanup of cleanups) {
    try {
      cleanup();
    } catch {
      // Exiting anyway: the others still run.
    }
  }
}
