import { invalidArgument } from "../../errors.ts";
import { checkObject } from "../../validate.ts";

/**
 * Payload checks shared by the bundled handlers; each throws `invalid_argument` naming the field.
 * @internal
 */

/** Checks that `payload` is an object with no field outside `known` (a typo must not be dropped silently). */
export function checkPayloadFields(payload: unknown, known: ReadonlySet<string>): Record<string, unknown> {
  const input = checkObject("payload", payload);
  for (const key of Object.keys(input)) {
    if (!known.has(key)) throw invalidArgument(`payload.${key}`, `absent (known fields: ${[...known].join(", ")})`, input[key]);
  }
  return input;
}

const variableName = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Checks a map of variable names to strings, such as environment variables or build args. */
export function checkVariables(field: string, value: unknown): Record<string, string> {
  const vars = checkObject(field, value);
  for (const [name, v] of Object.entries(vars)) {
    if (!variableName.test(name)) throw invalidArgument(field, "an object whose keys are variable names", name);
    if (typeof v !== "string") throw invalidArgument(`${field}.${name}`, "a string", v);
  }
  return { ...(vars as Record<string, string>) };
}
