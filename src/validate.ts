import { invalidArgument, OrchestratorError } from "./errors.ts";

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

/** Edit distance between two names (insert, delete, substitute, swap two neighbours), case-insensitive. */
function editDistance(a: string, b: string): number {
  a = a.toLowerCase();
  b = b.toLowerCase();
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) rows.push([i, ...Array<number>(b.length).fill(0)]);
  for (let j = 0; j <= b.length; j++) (rows[0] as number[])[j] = j;
  for (let i = 1; i <= a.length; i++) {
    const row = rows[i] as number[];
    const above = rows[i - 1] as number[];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min((above[j] as number) + 1, (row[j - 1] as number) + 1, (above[j - 1] as number) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, (rows[i - 2] as number[])[j - 2] as number + 1);
      row[j] = d;
    }
  }
  return (rows[a.length] as number[])[b.length] as number;
}

/**
 * The known name `name` was most likely meant as, or undefined: a near spelling (`maxAttempt` →
 * `maxAttempts`), another case, or the name with its unit (`timeout` → `timeoutMs`).
 */
export function closestName(name: string, known: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestScore = Infinity;
  const lower = name.toLowerCase();
  for (const candidate of known) {
    const c = candidate.toLowerCase();
    let score = editDistance(lower, c);
    // `delay` for `delayMs`, `idempotency` for `idempotencyKey`: a name missing a short suffix (a unit) counts as one edit.
    const [short, long] = lower.length < c.length ? [lower, c] : [c, lower];
    if (short.length >= 4 && long.length - short.length <= 3 && long.startsWith(short)) score = Math.min(score, 1);
    if (score <= Math.max(1, Math.floor(Math.min(lower.length, c.length) / 3)) && score < bestScore) {
      best = candidate;
      bestScore = score;
    }
  }
  return best;
}

/**
 * Refuses any own key of `value` that `known` does not list, naming it and the field most likely
 * meant, so a misspelt option (`maxAttempt`, `timeout`) fails loudly instead of being ignored.
 * `path` prefixes the key in the message (`retry.` for a nested object); `what` names the object.
 * @throws {OrchestratorError} `invalid_argument` with `details.field` (the unknown key, with
 * `path`) and `details.suggestion` when one was found.
 */
export function checkKnownKeys(what: string, value: Record<string, unknown>, known: ReadonlySet<string>, path = ""): void {
  for (const key in value) {
    if (!Object.hasOwn(value, key) || known.has(key)) continue;
    const suggestion = closestName(key, known);
    const hint = suggestion === undefined ? `known fields: ${[...known].join(", ")}` : `did you mean \`${path}${suggestion}\`?`;
    throw new OrchestratorError("invalid_argument", `Unknown field \`${path}${key}\` in ${what}: ${hint}`, {
      details: { field: `${path}${key}`, ...(suggestion === undefined ? {} : { suggestion: `${path}${suggestion}` }) },
    });
  }
}

type Unlisted<T, K extends readonly PropertyKey[]> = Exclude<keyof T, K[number]>;

/**
 * The set of an options type's field names for {@link checkKnownKeys}, checked by the compiler
 * both ways: a name `T` lacks is refused, and so is a list missing one of `T`'s fields (the
 * second argument must be `true`; the error names the missing field).
 * @example
 * ```ts
 * const known = knownKeys<RetryOptions>()(["baseDelayMs", "factor", "jitter", "maxDelayMs"], true);
 * ```
 */
export function knownKeys<T>() {
  return <const K extends readonly (keyof T & string)[]>(keys: K, complete: [Unlisted<T, K>] extends [never] ? true : Unlisted<T, K>): ReadonlySet<string> => {
    void complete;
    return new Set<string>(keys);
  };
}
