import { invalidArgument } from "../errors.ts";
import type { JobFilter, JobRecord, JobRecordState } from "../store/types.ts";
import { RECORD_STATES, lastAttemptOf } from "../store/record-rules.ts";
import { checkBoolean, checkInteger, checkLabels, checkObject, checkString } from "../validate.ts";
import type { ConsoleJobFilter, ConsoleJobSummary } from "./api-types.ts";

/**
 * How jobs leave the console: a filter read from a query string or a JSON body, and a record
 * turned into the list's summary. @internal
 */

const STATES: ReadonlySet<string> = new Set(RECORD_STATES);

/** Checks a filter given as JSON (saved filters, bulk actions). */
export function checkConsoleFilter(value: unknown): ConsoleJobFilter {
  const o = checkObject("filter", value ?? {});
  const known = new Set(["state", "type", "since", "until", "idPrefix", "metadata", "q", "deadLettered"]);
  for (const key of Object.keys(o)) if (!known.has(key)) throw invalidArgument(`filter.${key}`, `one of the filter fields (${[...known].join(", ")})`, key);
  const filter: ConsoleJobFilter = {};
  if (o.state !== undefined) {
    const states = Array.isArray(o.state) ? o.state : [o.state];
    for (const state of states) if (typeof state !== "string" || !STATES.has(state)) throw invalidArgument("filter.state", `one of ${RECORD_STATES.join(", ")}`, state);
    if (states.length > 0) filter.state = states as string[];
  }
  if (o.type !== undefined && o.type !== "") filter.type = checkString("filter.type", o.type, 256);
  if (o.since !== undefined) filter.since = checkInteger("filter.since", o.since, 0);
  if (o.until !== undefined) filter.until = checkInteger("filter.until", o.until, 0);
  if (o.idPrefix !== undefined && o.idPrefix !== "") filter.idPrefix = checkString("filter.idPrefix", o.idPrefix, 256);
  if (o.metadata !== undefined) {
    const metadata = checkLabels("filter.metadata", o.metadata);
    if (Object.keys(metadata).length > 0) filter.metadata = metadata;
  }
  if (o.q !== undefined && o.q !== "") filter.q = checkString("filter.q", o.q, 256);
  if (o.deadLettered !== undefined) filter.deadLettered = checkBoolean("filter.deadLettered", o.deadLettered);
  return filter;
}

/** A time in a query: epoch ms, or an ISO 8601 date. */
function timeParam(field: string, text: string): number {
  if (/^\d+$/.test(text)) return checkInteger(field, Number(text), 0);
  const parsed = Date.parse(text);
  if (Number.isNaN(parsed)) throw invalidArgument(field, "epoch milliseconds or an ISO 8601 date", text);
  return parsed;
}

/** Reads a filter from `?state=a,b&type=&since=&until=&idPrefix=&meta.k=v&q=&deadLettered=`. */
export function filterFromQuery(query: URLSearchParams): ConsoleJobFilter {
  const raw: Record<string, unknown> = {};
  const state = query.getAll("state").flatMap((s) => s.split(",")).filter((s) => s !== "");
  if (state.length > 0) raw.state = state;
  for (const key of ["type", "idPrefix", "q"]) {
    const value = query.get(key);
    if (value !== null) raw[key] = value;
  }
  for (const key of ["since", "until"]) {
    const value = query.get(key);
    if (value !== null && value !== "") raw[key] = timeParam(key, value);
  }
  const dead = query.get("deadLettered");
  if (dead !== null && dead !== "") {
    if (dead !== "true" && dead !== "false") throw invalidArgument("deadLettered", "true or false", dead);
    raw.deadLettered = dead === "true";
  }
  const metadata: Record<string, string> = {};
  for (const [key, value] of query) if (key.startsWith("meta.") && key.length > 5) metadata[key.slice(5)] = value;
  if (Object.keys(metadata).length > 0) raw.metadata = metadata;
  return checkConsoleFilter(raw);
}

/** The store filter of a console filter. */
export function storeFilter(filter: ConsoleJobFilter): JobFilter {
  const out: JobFilter = {};
  if (filter.state !== undefined) out.state = filter.state as JobRecordState[];
  if (filter.type !== undefined) out.type = filter.type;
  if (filter.since !== undefined) out.createdAfter = filter.since;
  if (filter.until !== undefined) out.createdBefore = filter.until;
  if (filter.idPrefix !== undefined) out.idPrefix = filter.idPrefix;
  if (filter.metadata !== undefined) out.metadata = filter.metadata;
  if (filter.q !== undefined) out.search = filter.q;
  if (filter.deadLettered !== undefined) out.deadLettered = filter.deadLettered;
  return out;
}

/** A record as the job lists show it. */
export function summarize(record: JobRecord): ConsoleJobSummary {
  const last = record.attempts.at(-1);
  return {
    id: record.id,
    type: record.type,
    state: record.state,
    createdAt: record.createdAt,
    updatedAt: record.updatedAt,
    ...(record.finishedAt === undefined ? {} : { finishedAt: record.finishedAt }),
    attempt: lastAttemptOf(record),
    maxAttempts: record.maxAttempts,
    ...(last?.workerId === undefined ? {} : { workerId: last.workerId }),
    ...(record.progress === undefined ? {} : { progress: { progress: record.progress.progress, ...(record.progress.message === undefined ? {} : { message: record.progress.message }) } }),
    metadata: record.metadata,
    ...(record.deadLetter === undefined ? {} : { deadLetter: record.deadLetter }),
    ...(record.error === undefined ? {} : { error: { code: record.error.code, message: record.error.message } }),
    ...(record.reason === undefined ? {} : { reason: record.reason }),
    redrives: record.redrives,
  };
}
