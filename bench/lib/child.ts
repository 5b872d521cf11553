/**
 * Child side of the bench IPC protocol (see proc.ts): answer the parent's commands, send events,
 * report CPU from `process.cpuUsage()`, and exit when the parent asks or disappears.
 */

/** Messages from the parent. */
export type ParentMessage = { type: "request"; id: number; cmd: string; args: unknown } | { type: "exit" };

/** Messages to the parent. */
export type ChildMessage =
  | { type: "ready"; info: Record<string, unknown> }
  | { type: "fatal"; error: string }
  | { type: "reply"; id: number; ok: true; value: unknown }
  | { type: "reply"; id: number; ok: false; error: string }
  | { type: "event"; name: string; data: unknown };

/** A command handler: its resolved value is sent back to the parent. */
export type Command = (args: any) => unknown;

function send(message: ChildMessage): void {
  if (process.connected) process.send!(message);
}

/** Sends an event to the parent (fire and forget). */
export function sendEvent(name: string, data: unknown = null): void {
  send({ type: "event", name, data });
}

/**
 * Serves `commands` to the parent, plus `cpu` (this process's user + system CPU microseconds).
 * `onExit` runs (bounded by 2 s) when the parent asks the child to exit or disconnects.
 */
export function serveChild(commands: Record<string, Command>, options: { onExit?: () => Promise<void> | void } = {}): void {
  if (!process.send) throw new Error("This script is a bench child process: run it through bench/run.ts");
  let exiting = false;
  const exit = async (code: number): Promise<void> => {
    if (exiting) return;
    exiting = true;
    const force = setTimeout(() => process.exit(code), 2000);
    force.unref();
    try {
      await options.onExit?.();
    } catch {
      // Exiting anyway.
    }
    process.exit(code);
  };
  const all: Record<string, Command> = {
    cpu: () => {
      const u = process.cpuUsage();
      return u.user + u.system;
    },
    ...commands,
  };
  process.on("message", (raw) => {
    const message = raw as ParentMessage;
    if (message.type === "exit") {
      void exit(0);
      return;
    }
    if (message.type !== "request") return;
    const command = all[message.cmd];
    if (!command) {
      send({ type: "reply", id: message.id, ok: false, error: `unknown command ${message.cmd}` });
      return;
    }
    Promise.resolve()
      .then(() => command(message.args))
      .then(
        (value) => send({ type: "reply", id: message.id, ok: true, value }),
        (err: unknown) => send({ type: "reply", id: message.id, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
      );
  });
  // The parent died or closed the channel: never outlive it.
  process.on("disconnect", () => void exit(0));
}

/** Tells the parent this child is ready, with whatever it needs to know (a port, a pid). */
export function signalReady(info: Record<string, unknown> = {}): void {
  send({ type: "ready", info });
}

/** Tells the parent startup failed, then exits 1 once the message is out. */
export function signalFatal(error: unknown): void {
  const message: ChildMessage = { type: "fatal", error: error instanceof Error ? (error.stack ?? error.message) : String(error) };
  setTimeout(() => process.exit(1), 1000).unref();
  if (process.connected) process.send!(message, () => process.exit(1));
  else process.exit(1);
}

/** Parses `--name value` pairs from argv of a child. */
export function childArgs(): Record<string, string> {
  const out: Record<string, string> = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i + 1 < argv.length; i += 2) out[argv[i]!.replace(/^--/, "")] = argv[i + 1]!;
  return out;
}
