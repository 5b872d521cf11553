/**
 * Submit a job by hand: type, JSON payload and the spec fields a `JobSpec` takes (metadata,
 * labels, priority, due time, limits). The server submits it as code would; what it refuses is
 * shown beside the field it names.
 */
import { api, ApiError } from "../api.ts";
import { h, replace } from "../dom.ts";
import { parseMetadata } from "../format.ts";
import type { View } from "../main.ts";

/** The form's inputs by the spec field they fill. */
type Inputs = Record<string, HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement>;

function field(label: string, input: HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement, hint?: string): HTMLElement {
  const name = input.getAttribute("name") ?? "";
  const hintId = hint ? `hint-${name}` : undefined;
  input.setAttribute("aria-describedby", [hintId, `error-${name}`].filter(Boolean).join(" "));
  return h(
    "div",
    { class: "field" },
    h("label", {}, label, input),
    hint ? h("p", { id: hintId, class: "hint" }, hint) : null,
    h("p", { id: `error-${name}`, class: "error field-error", hidden: true }),
  );
}

/** Marks one input as refused, with why; `undefined` clears every mark. */
function mark(form: HTMLFormElement, name: string | undefined, message?: string): void {
  if (name === undefined) {
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    for (const el of form.querySelectorAll<HTMLElement>(".field-error")) {
      el.hidden = true;
      el.textContent = "";
    }
    return;
  }
  const input = form.querySelector<HTMLElement>(`[name="${name}"]`);
  const error = form.querySelector<HTMLElement>(`#error-${name}`);
  if (!input || !error) return;
  input.setAttribute("aria-invalid", "true");
  error.textContent = message ?? "";
  error.hidden = false;
}

/** `key=value` lines; a line without `=` is a mistake, not something to drop. */
function pairsOf(text: string): { pairs?: Record<string, string>; bad?: string } {
  const bad = text.split(/\r?\n|,/).map((l) => l.trim()).find((l) => l !== "" && l.indexOf("=") <= 0);
  if (bad !== undefined) return { bad };
  const pairs = parseMetadata(text);
  return pairs ? { pairs } : {};
}

/** Reads the form into a spec, or the first mistake found (the field it names and why). */
function specOf(inputs: Inputs): { spec: { type: string; payload: unknown } & Record<string, unknown> } | { field: string; message: string } {
  const value = (name: string) => inputs[name]?.value.trim() ?? "";
  const type = value("type");
  if (!type) return { field: "type", message: "Give the job's type." };
  let payload: unknown;
  try {
    payload = JSON.parse(inputs.payload?.value || "null");
  } catch (e) {
    return { field: "payload", message: `The payload is not JSON: ${e instanceof Error ? e.message : String(e)}` };
  }
  const spec: { type: string; payload: unknown } & Record<string, unknown> = { type, payload };
  for (const name of ["metadata", "labels"]) {
    const { pairs, bad } = pairsOf(inputs[name]?.value ?? "");
    if (bad !== undefined) return { field: name, message: `Expected key=value, one a line; got "${bad}".` };
    if (pairs) spec[name] = pairs;
  }
  for (const name of ["maxAttempts", "timeoutMs", "startTimeoutMs", "delayMs"]) {
    const text = value(name);
    if (text === "") continue;
    const n = Number(text);
    if (!Number.isInteger(n) || n < 0) return { field: name, message: `Expected a whole number, got "${text}".` };
    spec[name] = n;
  }
  const priority = value("priority");
  if (priority !== "") spec.priority = Number(priority);
  const runAt = value("runAt");
  if (runAt !== "") {
    // A datetime-local input has no zone: it is the browser's local time.
    const at = new Date(runAt);
    if (Number.isNaN(at.getTime())) return { field: "runAt", message: `Not a date and time: "${runAt}".` };
    if (spec.delayMs !== undefined) return { field: "runAt", message: "Give a run time or a delay, not both." };
    spec.runAt = at.toISOString();
  }
  const key = value("idempotencyKey");
  if (key) spec.idempotencyKey = key;
  return { spec };
}

/** The submit form. */
export const submitView: View = async (app, root) => {
  const types = h("datalist", { id: "job-types" });
  const error = h("p", { class: "error", role: "alert" });
  const inputs: Inputs = {
    type: h("input", { name: "type", required: true, list: "job-types", autocomplete: "off", maxlength: 200 }),
    payload: h("textarea", { name: "payload", rows: 8, spellcheck: "false", class: "mono" }, "{}"),
    metadata: h("textarea", { name: "metadata", rows: 2, spellcheck: "false" }),
    labels: h("textarea", { name: "labels", rows: 2, spellcheck: "false" }),
    priority: h(
      "select",
      { name: "priority" },
      h("option", { value: "" }, "3 (default)"),
      [1, 2, 4, 5].map((p) => h("option", { value: String(p) }, p === 1 ? "1 (highest)" : p === 5 ? "5 (lowest)" : String(p))),
    ),
    runAt: h("input", { name: "runAt", type: "datetime-local", step: 1 }),
    delayMs: h("input", { name: "delayMs", type: "number", min: 0, inputmode: "numeric" }),
    maxAttempts: h("input", { name: "maxAttempts", type: "number", min: 1, max: 1000, inputmode: "numeric" }),
    timeoutMs: h("input", { name: "timeoutMs", type: "number", min: 1, inputmode: "numeric" }),
    startTimeoutMs: h("input", { name: "startTimeoutMs", type: "number", min: 1, inputmode: "numeric" }),
    idempotencyKey: h("input", { name: "idempotencyKey", autocomplete: "off", maxlength: 200 }),
  };
  const form = h(
    "form",
    { class: "submit-form", "aria-labelledby": "submit-title", novalidate: true },
    field("Type", inputs.type!, "The handler name, as workers announce it."),
    field("Payload (JSON)", inputs.payload!),
    h(
      "div",
      { class: "fields" },
      field("Metadata (key=value, one a line)", inputs.metadata!),
      field("Labels a worker must carry (key=value, one a line)", inputs.labels!),
    ),
    h(
      "div",
      { class: "fields" },
      field("Priority", inputs.priority!),
      field("Run at (your local time)", inputs.runAt!, "Or a delay; empty runs it now."),
      field("Delay (ms)", inputs.delayMs!),
    ),
    h(
      "div",
      { class: "fields" },
      field("Max attempts", inputs.maxAttempts!),
      field("Timeout (ms)", inputs.timeoutMs!),
      field("Start timeout (ms)", inputs.startTimeoutMs!),
      field("Idempotency key", inputs.idempotencyKey!),
    ),
    types,
    error,
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", disabled: !app.can("submit") }, "Submit job"), h("a", { href: "#/jobs", class: "button" }, "Back to jobs")),
  );
  const refuse = (name: string | undefined, message: string) => {
    error.textContent = message;
    if (name === undefined || !(name in inputs)) return;
    mark(form, name, message);
    inputs[name]?.focus();
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    error.textContent = "";
    mark(form, undefined);
    const read = specOf(inputs);
    if ("field" in read) return refuse(read.field, read.message);
    void api.submit(read.spec).then(
      (result) => {
        app.toast(`Submit ${read.spec.type}: done`);
        location.hash = `#/jobs/${encodeURIComponent(result.id)}`;
      },
      (e: unknown) => {
        // The server names the field it refused (`labels.gpu` marks `labels`).
        const name = e instanceof ApiError ? e.field?.split(/[.[ ]/)[0] : undefined;
        refuse(name, e instanceof ApiError && e.status === 403 ? `Refused (403 ${e.code}): ${e.message}` : `Not submitted: ${e instanceof Error ? e.message : String(e)}`);
      },
    );
  });
  replace(
    root,
    h("h1", { id: "submit-title" }, "Submit a job"),
    app.can("submit") ? null : h("p", { class: "callout" }, "Read-only: you may not submit jobs from this console."),
    form,
  );
  // Offer the job types the workers announce.
  void api.workers().then(
    ({ workers }) => replace(types, [...new Set(workers.flatMap((w) => w.jobTypes ?? []))].sort().map((t) => h("option", { value: t }))),
    () => {},
  );
};
