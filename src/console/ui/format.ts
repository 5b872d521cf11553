/** How the page writes times, durations, states and values: one home for each. */
import { h } from "./dom.ts";

/** A `<time>` showing the local date and time of `ms` (and the ISO form for machines and tooltips). */
export function time(ms: number | undefined): HTMLElement | string {
  if (ms === undefined || !Number.isFinite(ms)) return "—";
  const date = new Date(ms);
  const sameDay = date.toDateString() === new Date().toDateString();
  const text = sameDay
    ? date.toLocaleTimeString(undefined, { hour12: false })
    : date.toLocaleString(undefined, { hour12: false, year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return h("time", { datetime: date.toISOString(), title: date.toISOString() }, text);
}

/** `1.2 s`, `340 ms`, `3 min 4 s`. */
export function duration(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Math.round((ms % 60_000) / 1000);
  if (minutes < 60) return seconds === 0 ? `${minutes} min` : `${minutes} min ${seconds} s`;
  return minutes % 60 === 0 ? `${Math.floor(minutes / 60)} h` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** The job states, in the order the page lists them. */
export const JOB_STATES = ["queued", "scheduled", "unschedulable", "running", "retrying", "completed", "failed", "cancelled"] as const;

/** A state as a badge: the word itself (colour is never the only cue). */
export function badge(state: string | undefined): HTMLElement {
  const word = state ?? "unknown";
  return h("span", { class: `badge state-${word.replace(/[^a-z_-]/gi, "")}` }, word);
}

/** The first 8 characters of an id, the whole id in its title. */
export function shortId(id: string): HTMLElement {
  return h("span", { class: "mono", title: id }, id.length > 12 ? `${id.slice(0, 8)}…` : id);
}

/** A link to a job's page. */
export function jobLink(id: string, full = false): HTMLAnchorElement {
  return h("a", { href: `#/jobs/${encodeURIComponent(id)}`, class: "mono", title: id, "aria-label": `Job ${id}` }, full || id.length <= 12 ? id : `${id.slice(0, 8)}…`);
}

/** Any JSON value, pretty-printed for a `<pre>` (as text). */
export function json(value: unknown): string {
  if (value === undefined) return "undefined";
  try {
    return JSON.stringify(value, null, 2) ?? String(value);
  } catch {
    return String(value);
  }
}

/** `{a: "1"}` as `a=1` chips. */
export function pairs(record: Record<string, string> | undefined): HTMLElement | string {
  const entries = Object.entries(record ?? {});
  if (entries.length === 0) return "—";
  return h("ul", { class: "chips" }, entries.map(([k, v]) => h("li", {}, `${k}=${v}`)));
}

/** A progress bar with its percentage in words. */
export function progressBar(progress: number | undefined, message?: string): HTMLElement | string {
  if (progress === undefined) return "—";
  const percent = Math.round(Math.max(0, Math.min(1, progress)) * 100);
  return h(
    "span",
    { class: "progress" },
    h("progress", { max: 100, value: percent, "aria-label": `Progress ${percent}%` }),
    h("span", { class: "progress-text" }, `${percent}%${message ? ` ${message}` : ""}`),
  );
}

/** `key=value` lines (or comma-separated pairs) as a record; entries without a key are skipped. */
export function parseMetadata(text: string): Record<string, string> | undefined {
  const metadata: Record<string, string> = {};
  for (const line of text.split(/\r?\n|,/)) {
    const at = line.indexOf("=");
    if (at <= 0) continue;
    metadata[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return Object.keys(metadata).length > 0 ? metadata : undefined;
}
