/**
 * The page's end of the console's JSON API: every request goes through {@link request}, which
 * adds the CSRF token to mutating requests and turns `{ error: { code, message } }` answers into
 * {@link ApiError}s. Paths are relative (`api/jobs`), so the page works under any mount prefix.
 */
import type {
  ConsoleAuditEntry,
  ConsoleBulkPreview,
  ConsoleBulkResult,
  ConsoleDeadLetterList,
  ConsoleInvalidDeadLetter,
  ConsoleInvalidDeadLetterList,
  ConsoleJobFilter,
  ConsoleJobList,
  ConsoleJobPage,
  ConsoleOverview,
  ConsoleSavedFilter,
  ConsoleSession,
  ConsoleWorker,
} from "../api-types.ts";

/** An answer other than 2xx: the HTTP status, the console's error code and message, and the input it names. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly field: string | undefined;
  constructor(status: number, code: string, message: string, field?: string) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

let csrfToken = "";

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (method !== "GET") headers["x-csrf-token"] = csrfToken;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin", cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, "unavailable", `The console cannot be reached (${error instanceof Error ? error.message : String(error)})`);
  }
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = text === "" ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (!response.ok) {
    const error = (parsed as { error?: { code?: string; message?: string; field?: unknown } } | undefined)?.error;
    const field = typeof error?.field === "string" ? error.field : undefined;
    throw new ApiError(response.status, error?.code ?? `http_${response.status}`, error?.message ?? `${response.status} ${response.statusText}`, field);
  }
  return parsed as T;
}

/** The query string of a job filter, as `GET api/jobs` and the page's own URL take it. */
export function filterToQuery(filter: ConsoleJobFilter): URLSearchParams {
  const query = new URLSearchParams();
  for (const state of filter.state ?? []) query.append("state", state);
  if (filter.type) query.set("type", filter.type);
  if (filter.since !== undefined) query.set("since", String(filter.since));
  if (filter.until !== undefined) query.set("until", String(filter.until));
  if (filter.idPrefix) query.set("idPrefix", filter.idPrefix);
  if (filter.q) query.set("q", filter.q);
  if (filter.deadLettered !== undefined) query.set("deadLettered", String(filter.deadLettered));
  for (const [key, value] of Object.entries(filter.metadata ?? {})) query.set(`meta.${key}`, value);
  return query;
}

/** The job filter a query string holds (the inverse of {@link filterToQuery}; unknown keys are ignored). */
export function queryToFilter(query: URLSearchParams): ConsoleJobFilter {
  const filter: ConsoleJobFilter = {};
  const states = query.getAll("state").filter((s) => s !== "");
  if (states.length > 0) filter.state = states;
  const type = query.get("type");
  if (type) filter.type = type;
  const since = Number(query.get("since") ?? Number.NaN);
  if (Number.isFinite(since)) filter.since = since;
  const until = Number(query.get("until") ?? Number.NaN);
  if (Number.isFinite(until)) filter.until = until;
  const idPrefix = query.get("idPrefix");
  if (idPrefix) filter.idPrefix = idPrefix;
  const q = query.get("q");
  if (q) filter.q = q;
  const deadLettered = query.get("deadLettered");
  if (deadLettered === "true" || deadLettered === "false") filter.deadLettered = deadLettered === "true";
  for (const [key, value] of query) {
    if (key.startsWith("meta.") && key.length > 5) (filter.metadata ??= {})[key.slice(5)] = value;
  }
  return filter;
}

/** The console's API, one function per route. */
export const api = {
  async session(): Promise<ConsoleSession> {
    const session = await request<ConsoleSession>("GET", "api/session");
    csrfToken = session.csrfToken;
    return session;
  },
  overview: () => request<ConsoleOverview>("GET", "api/overview"),
  jobs: (filter: ConsoleJobFilter, cursor?: string, limit = 50) => {
    const query = filterToQuery(filter);
    if (cursor) query.set("cursor", cursor);
    query.set("limit", String(limit));
    return request<ConsoleJobList>("GET", `api/jobs?${query}`);
  },
  job: (id: string) => request<ConsoleJobPage>("GET", `api/jobs/${encodeURIComponent(id)}`),
  submit: (spec: { type: string; payload: unknown } & Record<string, unknown>) => request<{ id: string }>("POST", "api/jobs", spec),
  cancel: (id: string, reason: string) => request<unknown>("POST", `api/jobs/${encodeURIComponent(id)}/cancel`, { reason }),
  retry: (id: string) => request<{ id: string; redriven?: true; newId?: string }>("POST", `api/jobs/${encodeURIComponent(id)}/retry`, {}),
  workers: () => request<{ workers: ConsoleWorker[]; known?: boolean }>("GET", "api/workers"),
  worker: async (id: string) => (await request<{ worker: ConsoleWorker }>("GET", `api/workers/${encodeURIComponent(id)}`)).worker,
  drain: (id: string) => request<unknown>("POST", `api/workers/${encodeURIComponent(id)}/drain`, {}),
  undrain: (id: string) => request<unknown>("POST", `api/workers/${encodeURIComponent(id)}/undrain`, {}),
  deadLetters: (cursor?: string) => request<ConsoleDeadLetterList>("GET", `api/dead-letters${cursor ? `?cursor=${encodeURIComponent(cursor)}` : ""}`),
  /** Redrives these dead letters, or every one without `jobIds`. */
  redrive: (jobIds?: string[]) => request<{ redriven: string[]; missing: string[] }>("POST", "api/dead-letters/redrive", jobIds ? { jobIds } : {}),
  /** The dead letters that are not valid jobs, each body's start. */
  invalidDeadLetters: () => request<ConsoleInvalidDeadLetterList>("GET", "api/dead-letters/invalid"),
  /** One of them with its whole body (up to 1 MiB). */
  invalidDeadLetter: async (id: string) => (await request<{ deadLetter: ConsoleInvalidDeadLetter }>("GET", `api/dead-letters/invalid/${encodeURIComponent(id)}`)).deadLetter,
  discardDeadLetter: (id: string) => request<{ discarded: string }>("DELETE", `api/dead-letters/invalid/${encodeURIComponent(id)}`),
  /** The audit log, newest first; `before` (epoch ms) pages back. */
  audit: (before?: number) => request<{ entries: ConsoleAuditEntry[] }>("GET", `api/audit${before === undefined ? "" : `?before=${before}`}`),
  filters: () => request<{ filters: ConsoleSavedFilter[] }>("GET", "api/filters"),
  saveFilter: (name: string, filter: ConsoleJobFilter) => request<unknown>("POST", "api/filters", { name, filter }),
  deleteFilter: (name: string) => request<unknown>("DELETE", `api/filters/${encodeURIComponent(name)}`),
  bulkPreview: (action: "cancel" | "retry", filter: ConsoleJobFilter) =>
    request<ConsoleBulkPreview>("POST", "api/bulk/preview", { action, filter }),
  bulk: (action: "cancel" | "retry", filter: ConsoleJobFilter, expectedCount: number, reason?: string) =>
    request<ConsoleBulkResult>("POST", "api/bulk", { action, filter, expectedCount, reason }),
};
