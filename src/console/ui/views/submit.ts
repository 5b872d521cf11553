/** Submit a job by hand: type, JSON payload and the common spec fields; the server submits it as code would. */
import { api } from "../api.ts";
import { h, replace } from "../dom.ts";
import { parseMetadata } from "../format.ts";
import type { View } from "../main.ts";

function field(label: string, input: HTMLElement, hint?: string): HTMLElement {
  const hintId = hint ? `hint-${input.getAttribute("name")}` : undefined;
  if (hintId) input.setAttribute("aria-describedby", hintId);
  return h("div", { class: "field" }, h("label", {}, label, input), hint ? h("p", { id: hintId, class: "hint" }, hint) : null);
}

/** The submit form. */
export const submitView: View = async (app, root) => {
  const types = h("datalist", { id: "job-types" });
  const error = h("p", { class: "error", role: "alert" });
  const payload = h("textarea", { name: "payload", rows: 8, spellcheck: "false", class: "mono" }, "{}");
  const form = h(
    "form",
    { class: "submit-form", "aria-labelledby": "submit-title", novalidate: true },
    field("Type", h("input", { name: "type", required: true, list: "job-types", autocomplete: "off", maxlength: 200 }), "The handler name, as workers announce it."),
    field("Payload (JSON)", payload),
    field("Metadata (key=value, one a line)", h("textarea", { name: "metadata", rows: 2, spellcheck: "false" })),
    h(
      "div",
      { class: "fields" },
      field("Max attempts", h("input", { name: "maxAttempts", type: "number", min: 1, max: 100, inputmode: "numeric" })),
      field("Timeout (ms)", h("input", { name: "timeoutMs", type: "number", min: 1, inputmode: "numeric" })),
      field("Idempotency key", h("input", { name: "idempotencyKey", autocomplete: "off", maxlength: 200 })),
    ),
    types,
    error,
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", disabled: !app.can("submit") }, "Submit job"), h("a", { href: "#/jobs", class: "button" }, "Back to jobs")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    error.textContent = "";
    const data = new FormData(form);
    const type = String(data.get("type") ?? "").trim();
    if (!type) {
      error.textContent = "Give the job's type.";
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(String(data.get("payload") ?? "") || "null");
    } catch (e) {
      error.textContent = `The payload is not JSON: ${e instanceof Error ? e.message : String(e)}`;
      payload.focus();
      return;
    }
    const spec: { type: string; payload: unknown } & Record<string, unknown> = { type, payload: parsed };
    const metadata = parseMetadata(String(data.get("metadata") ?? ""));
    if (metadata) spec.metadata = metadata;
    for (const name of ["maxAttempts", "timeoutMs"] as const) {
      const value = String(data.get(name) ?? "");
      if (value !== "") spec[name] = Number(value);
    }
    const key = String(data.get("idempotencyKey") ?? "").trim();
    if (key) spec.idempotencyKey = key;
    void app.run(`Submit ${type}`, () => api.submit(spec)).then((result) => {
      if (result?.id) location.hash = `#/jobs/${encodeURIComponent(result.id)}`;
    });
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
