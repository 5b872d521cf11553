import { invalidArgument } from "./errors.ts";

/**
 * Small checkers shared by every option resolver and by the envelope parser. Each returns the
 * value with its type narrowed, or throws `invalid_argument` naming the field, the expectation
 * and the value received.
 * @internal
 */

export function checkInteger(field: string, value: unknown, min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`;
    throw invalidArgument(field, `an integer ${range}`, value);
  }
  return value;
}

export function checkNumber(field: string, value: unknown, min = -Infinity, max = Infinity): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) {
    const range = max === Infinity ? `>= ${min}` : `from ${min} to ${max}`;
    throw invalidArgument(field, `a finite number ${range}`, value);
  }
  return value;
}

export function checkString(field: string, value: unknown, maxLength = 1024): string {
  if (typeof value !== "string" || value.length === 0 || value.length > maxLength) {
    throw invalidArgument(field, `a non-empty string of at most ${maxLength} characters`, value);
  }
  return value;
}

export function checkBoolean(field: string, value: unknown): boolean {
  if (typeof value !== "boolean") throw invalidArgument(field, "a boolean", value);
  return value;
}

export function checkFunction<T extends (...args: never[]) => unknown>(field: string, value: unknown): T {
  if (typeof value !== "function") throw invalidArgument(field, "a function", value);
  return value as T;
}

export function checkObject(field: string, value: unknown): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw invalidArgument(field, "an object", value);
  return value as Record<string, unknown>;
}

/** A flat `{ [key]: string }` map such as worker labels. */
export function checkLabels(field: string, value: unknown): Record<string, string> {
  const labels = checkObject(field, value);
  for (const [key, v] of Object.entries(labels)) {
    if (typeof v !== "string") throw invalidArgument(`${field}.${key}`, "a string", v);
  }
  return { ...(labels as Record<string, string>) };
}

export function checkSignal(field: string, value: unknown): AbortSignal | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof AbortSignal)) throw invalidArgument(field, "an AbortSignal", value);
  return value;
}

/** Returns `value`, or `fallback` when `value` is undefined, checked by `check`. */
export function optional<T>(value: unknown, fallback: T, check: (value: unknown) => T): T {
  return value === undefined ? fallback : check(value);
}
