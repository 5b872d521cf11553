import { AsyncLocalStorage } from "node:async_hooks";
import { OrchestratorError } from "../errors.ts";

/**
 * What keeps a handler from hurting its worker, shared by every runtime that runs handlers
 * (`serveWorker()` and `InProcessTransport`, both through `JobRunner`): values a handler passes
 * are turned into text without throwing, a thrown value becomes a readable message, a result
 * JSON cannot carry faithfully is refused with the path that is wrong, and faults its code
 * raises outside its own promise (an unhandled rejection, a throw in a timer) are traced back to
 * its job through an `AsyncLocalStorage`.
 * @internal
 */

const MAX_TEXT = 4096;

/** `String(value)` that never throws (a `null` prototype, a throwing `toString`, a revoked proxy). */
export function safeText(value: unknown): string {
  try {
    return String(value);
  } catch {
    try {
      return JSON.stringify(value) ?? Object.prototype.toString.call(value);
    } catch {
      return Object.prototype.toString.call(value);
    }
  }
}

/** A useful message for anything a handler throws or rejects with. */
export function thrownMessage(value: unknown): string {
  if (value instanceof Error) {
    const message = safeText(value.message);
    if (message !== "") return message;
    const name = safeText(value.name) || "Error";
    return `${name} thrown without a message`;
  }
  if (value === undefined || value === null) return `handler threw ${String(value)}`;
  if (typeof value === "string") return value === "" ? "handler threw an empty string" : value;
  if (typeof value === "object") {
    const kind = constructorName(value);
    let json: string | undefined;
    try {
      json = JSON.stringify(value);
    } catch {
      json = undefined;
    }
    if (json === undefined || json === "{}") return `handler threw a${/^[AEIOU]/.test(kind) ? "n" : ""} ${kind} with nothing to show`;
    const text = json.length > MAX_TEXT ? `${json.slice(0, MAX_TEXT)}…` : json;
    return `handler threw ${kind === "Object" ? "" : `${kind} `}${text}`;
  }
  return `handler threw ${safeText(value)}`;
}

function constructorName(value: object): string {
  try {
    const proto = Object.getPrototypeOf(value) as { constructor?: { name?: unknown } } | null;
    const name = proto?.constructor?.name;
    return typeof name === "string" && name !== "" ? name : "Object";
  } catch {
    return "Object";
  }
}

/**
 * Refuses a result JSON would not carry as it is: a function, symbol or bigint anywhere, a
 * non-finite number, a `Map`/`Set`/`WeakMap`/class instance without `toJSON`, a cycle. Plain
 * objects, arrays, strings, finite numbers, booleans, null, `undefined` at the top (no result),
 * and objects with their own `toJSON` (a `Date`) pass.
 * @throws {OrchestratorError} `invalid_argument` (not retryable) naming the path, e.g. `result.items[2]`.
 */
export function checkResult(value: unknown): void {
  if (value === undefined) return;
  walk(value, "result", new Set());
}

function refuse(path: string, what: string): never {
  throw new OrchestratorError("invalid_argument", `the handler's result cannot be sent as JSON: \`${path}\` is ${what}`, {
    retryable: false,
    details: { field: path },
  });
}

function walk(value: unknown, path: string, seen: Set<object>): void {
  switch (typeof value) {
    case "string":
    case "boolean":
      return;
    case "number":
      if (!Number.isFinite(value)) refuse(path, `${value} (JSON has no such number)`);
      return;
    case "undefined":
      refuse(path, "undefined (JSON drops it)");
    case "function":
      refuse(path, "a function");
    case "symbol":
      refuse(path, "a symbol");
    case "bigint":
      refuse(path, "a bigint");
  }
  if (value === null) return;
  const object = value as object;
  if (seen.has(object)) refuse(path, "a reference back to itself (a cycle)");
  if (typeof (object as { toJSON?: unknown }).toJSON === "function") return;
  if (object instanceof Map) refuse(path, "a Map (JSON makes it {})");
  if (object instanceof Set) refuse(path, "a Set (JSON makes it {})");
  seen.add(object);
  if (Array.isArray(object)) {
    object.forEach((item, i) => walk(item, `${path}[${i}]`, seen));
  } else {
    const proto = Object.getPrototypeOf(object) as object | null;
    if (proto !== Object.prototype && proto !== null) refuse(path, `an instance of ${constructorName(object)} (JSON keeps only its own fields)`);
    for (const key of Object.keys(object)) {
      const item = (object as Record<string, unknown>)[key];
      // JSON drops undefined fields; a field that is undefined is as good as absent.
      if (item !== undefined) walk(item, /^[A-Za-z_$][\w$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`, seen);
    }
  }
  seen.delete(object);
}

/** A job a handler runs for: faults its code raises later are routed to `fault`. */
export interface HandlerScope {
  fault(error: OrchestratorError): void;
}

const scopes = new AsyncLocalStorage<HandlerScope>();

/** Runs `fn` (a handler call) so that faults raised by what it starts are traced to `scope`. */
export function runInHandlerScope<T>(scope: HandlerScope, fn: () => T): T {
  return scopes.run(scope, fn);
}

let installed = 0;

function onRejection(reason: unknown): void {
  const scope = scopes.getStore();
  if (scope) {
    scope.fault(new OrchestratorError("handler_failed", `unhandled rejection in the handler's code: ${thrownMessage(reason)}`, { cause: reason, retryable: true }));
    return;
  }
  // Not from a handler: keep Node's default (crash) unless the host listens itself.
  if (process.listenerCount("unhandledRejection") === 1) throw reason;
}

function onException(error: unknown): void {
  const scope = scopes.getStore();
  if (scope) {
    scope.fault(new OrchestratorError("handler_failed", `uncaught exception in the handler's code: ${thrownMessage(error)}`, { cause: error, retryable: true }));
    return;
  }
  if (process.listenerCount("uncaughtException") === 1) {
    // Not from a handler and nobody else handles it: crash as Node would.
    process.removeListener("uncaughtException", onException);
    throw error;
  }
}

/**
 * While installed (counted: each call returns its own uninstall), an unhandled rejection or
 * uncaught exception raised by a handler's code fails that handler's job (`handler_failed`, its
 * signal aborted) instead of killing the process; one that no handler raised keeps Node's
 * default behaviour (the process crashes) unless the host has listeners of its own.
 */
export function containHandlerFaults(): () => void {
  if (installed++ === 0) {
    process.on("unhandledRejection", onRejection);
    process.on("uncaughtException", onException);
  }
  let done = false;
  return () => {
    if (done) return;
    done = true;
    if (--installed === 0) {
      process.removeListener("unhandledRejection", onRejection);
      process.removeListener("uncaughtException", onException);
    }
  };
}
