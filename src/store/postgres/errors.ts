import { OrchestratorError } from "../../errors.ts";

/** Socket errors that mean PostgreSQL could not be reached or the connection died. */
const socketCodes: ReadonlySet<string> = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENOTFOUND", "EAI_AGAIN"]);

/**
 * Translates what `pg` throws into an {@link OrchestratorError}, in one place: lost or refused
 * connections and server shutdowns (SQLSTATE class 08, 57P0x) are `unavailable`; a missing table
 * (42P01) is `precondition_failed` (run `migrate()`); anything else is `internal`.
 */
export function postgresError(cause: unknown, doing: string): OrchestratorError {
  if (cause instanceof OrchestratorError) return cause;
  const error = cause as { code?: unknown; message?: unknown } | undefined;
  const code = typeof error?.code === "string" ? error.code : "";
  const message = `PostgreSQL, ${doing}: ${typeof error?.message === "string" ? error.message : String(cause)}`;
  if (socketCodes.has(code) || code.startsWith("08") || code.startsWith("57P") || /Connection terminated|connection timeout|Client has encountered a connection error|not queryable/i.test(message)) {
    return new OrchestratorError("unavailable", message, { cause, details: { sqlstate: code } });
  }
  if (code === "42P01" || code === "3F000") {
    return new OrchestratorError("precondition_failed", `${message} (run PostgresJobStore.migrate() first)`, { cause, details: { sqlstate: code } });
  }
  return new OrchestratorError("internal", message, { cause, details: { sqlstate: code } });
}
