/**
 * The jobs view's filter: a search form whose values live in the page's URL (`#/jobs?state=…`),
 * so a filter is a link to share, and saved filters that are named URLs kept by the server.
 */
import { api, filterToQuery } from "../api.ts";
import type { ConsoleJobFilter, ConsoleSavedFilter } from "../../api-types.ts";
import type { App } from "../app.ts";
import { h, replace } from "../dom.ts";
import { JOB_STATES, parseMetadata } from "../format.ts";

/** `datetime-local` value of epoch ms (local time), or "". */
function toLocalInput(ms: number | undefined): string {
  if (ms === undefined) return "";
  const date = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return date.toISOString().slice(0, 16);
}

/** Epoch ms of a `datetime-local` value (local time), or undefined. */
function fromLocalInput(value: FormDataEntryValue | null): number | undefined {
  if (typeof value !== "string" || value === "") return undefined;
  const ms = new Date(value).getTime();
  return Number.isFinite(ms) ? ms : undefined;
}

/** Navigates to the jobs list with `filter`. */
export function showFilter(filter: ConsoleJobFilter): void {
  const query = filterToQuery(filter).toString();
  location.hash = query ? `#/jobs?${query}` : "#/jobs";
}

/** Whether a filter narrows anything. */
export function isEmptyFilter(filter: ConsoleJobFilter): boolean {
  return filterToQuery(filter).toString() === "";
}

/** The filter form, filled from `filter`; submitting it navigates to the filtered list. */
export function filterForm(filter: ConsoleJobFilter): HTMLFormElement {
  const states = new Set(filter.state ?? []);
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter jobs" },
    h(
      "fieldset",
      { class: "states" },
      h("legend", {}, "State"),
      JOB_STATES.map((state) => h("label", { class: "check" }, h("input", { type: "checkbox", name: "state", value: state, checked: states.has(state) }), state)),
    ),
    h(
      "div",
      { class: "fields" },
      h("label", {}, "Type", h("input", { name: "type", value: filter.type ?? "", autocomplete: "off" })),
      h("label", {}, "Id starts with", h("input", { name: "idPrefix", value: filter.idPrefix ?? "", autocomplete: "off", spellcheck: "false" })),
      h("label", {}, "Created from", h("input", { type: "datetime-local", name: "since", value: toLocalInput(filter.since) })),
      h("label", {}, "Created before", h("input", { type: "datetime-local", name: "until", value: toLocalInput(filter.until) })),
      h(
        "label",
        {},
        "Metadata (key=value, one a line)",
        h("textarea", { name: "metadata", rows: 2, spellcheck: "false" }, Object.entries(filter.metadata ?? {}).map(([k, v]) => `${k}=${v}`).join("\n")),
      ),
      h("label", {}, "Search id, type, metadata, payload", h("input", { type: "search", name: "q", value: filter.q ?? "", autocomplete: "off" })),
    ),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Apply filter"), h("a", { href: "#/jobs", class: "button" }, "Clear")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const next: ConsoleJobFilter = {};
    const picked = data.getAll("state").map(String);
    if (picked.length > 0) next.state = picked;
    const type = String(data.get("type") ?? "").trim();
    if (type) next.type = type;
    const idPrefix = String(data.get("idPrefix") ?? "").trim();
    if (idPrefix) next.idPrefix = idPrefix;
    const since = fromLocalInput(data.get("since"));
    if (since !== undefined) next.since = since;
    const until = fromLocalInput(data.get("until"));
    if (until !== undefined) next.until = until;
    const metadata = parseMetadata(String(data.get("metadata") ?? ""));
    if (metadata) next.metadata = metadata;
    const q = String(data.get("q") ?? "").trim();
    if (q) next.q = q;
    showFilter(next);
  });
  return form;
}

/** Saved filters: pick one to apply it, save the current one under a name, delete one. */
export function savedFilters(app: App, current: ConsoleJobFilter): HTMLElement {
  const section = h("section", { class: "saved", "aria-labelledby": "saved-filters" }, h("h2", { id: "saved-filters" }, "Saved filters"));
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  section.append(list);
  const load = async () => {
    let filters: ConsoleSavedFilter[];
    try {
      filters = (await api.filters()).filters;
    } catch (error) {
      replace(list, h("p", { class: "error" }, `Saved filters are unavailable: ${error instanceof Error ? error.message : String(error)}`));
      return;
    }
    replace(
      list,
      filters.length === 0
        ? h("p", { class: "muted" }, "None yet.")
        : h(
            "ul",
            { class: "saved-list" },
            filters.map((saved) =>
              h(
                "li",
                {},
                h("a", { href: `#/jobs?${filterToQuery(saved.filter)}` }, saved.name),
                " ",
                app.actionButton(
                  "filters",
                  "Delete",
                  () => void app.run(`Delete filter ${saved.name}`, () => api.deleteFilter(saved.name)).then(load),
                  { "aria-label": `Delete saved filter ${saved.name}`, class: "action small" },
                ),
              ),
            ),
          ),
    );
  };
  if (!isEmptyFilter(current)) {
    const name = h("input", { name: "name", required: true, maxlength: 100, autocomplete: "off" });
    const form = h(
      "form",
      { class: "inline", "aria-label": "Save this filter" },
      h("label", {}, "Save this filter as", name),
      h("button", { type: "submit", disabled: !app.can("filters"), title: app.can("filters") ? undefined : "Read-only: you may not save filters" }, "Save"),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = name.value.trim();
      if (value) void app.run(`Save filter ${value}`, () => api.saveFilter(value, current)).then(load);
    });
    section.append(form);
  }
  void load();
  return section;
}
