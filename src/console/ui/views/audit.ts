/** Audit: who did what, when, and how it went; new entries arrive live. */
import { api, filterToQuery } from "../api.ts";
import type { ConsoleAuditEntry, ConsoleJobFilter } from "../../api-types.ts";
import { h, replace, tableHead, tableRow } from "../dom.ts";
import type { Column } from "../dom.ts";
import { badge, time } from "../format.ts";
import type { View } from "../main.ts";

function target(entry: ConsoleAuditEntry): string {
  const parts: string[] = [];
  if (entry.target) parts.push(entry.target);
  if (entry.filter) parts.push(`filter ${decodeURIComponent(filterToQuery(entry.filter as ConsoleJobFilter).toString()) || "(all jobs)"}`);
  if (entry.count !== undefined) parts.push(`${entry.count} job${entry.count === 1 ? "" : "s"}`);
  return parts.join(", ") || "—";
}

const columns: ReadonlyArray<Column<ConsoleAuditEntry>> = [
  { label: "When", cell: (e) => time(e.at) },
  { label: "Who", cell: (e) => e.who },
  { label: "Action", cell: (e) => e.action },
  // Targets and details hold long tokens (ids, a dead letter's sha256): they may break anywhere.
  { label: "Target", cell: (e) => h("span", { class: "token" }, target(e)) },
  { label: "Outcome", cell: (e) => badge(e.outcome) },
  { label: "Detail", cell: (e) => h("span", { class: "token" }, e.detail ?? "") },
];

/** The audit log, newest first, older pages on demand. */
export const auditView: View = async (app, root) => {
  const { entries } = await api.audit();
  const tbody = h("tbody", {}, entries.map((e) => tableRow(columns, e, e.id)));
  const empty = h("p", { class: "empty", hidden: entries.length > 0 }, "Nothing was done through this console yet.");
  let oldest = entries.at(-1)?.at;
  const older = h("button", { type: "button", hidden: entries.length === 0 }, "Load older");
  older.addEventListener("click", async () => {
    try {
      const page = await api.audit(oldest === undefined ? undefined : oldest + 1);
      const fresh = page.entries.filter((e) => !e.id || !tbody.querySelector(`tr[data-key="${CSS.escape(e.id)}"]`));
      tbody.append(...fresh.map((e) => tableRow(columns, e, e.id)));
      oldest = page.entries.at(-1)?.at ?? oldest;
      if (fresh.length === 0) older.hidden = true;
    } catch (error) {
      app.toast(`Loading older entries failed: ${error instanceof Error ? error.message : String(error)}`, "error");
    }
  });
  replace(
    root,
    h("h1", {}, "Audit log"),
    h("p", { class: "summary" }, "Every action taken through the console, allowed or refused, newest first."),
    app.session.persisted === false ? h("p", { class: "callout" }, "This log is kept in this process's memory (the job store is not persistent): it starts empty again after a restart.") : null,
    empty,
    h("table", { class: "grid" }, h("caption", { class: "visually-hidden" }, "Audit log"), tableHead(columns), tbody),
    older,
  );
  return app.live.on("audit", (entry) => {
    if (entry.id && tbody.querySelector(`tr[data-key="${CSS.escape(entry.id)}"]`)) return;
    empty.hidden = true;
    older.hidden = false;
    tbody.prepend(tableRow(columns, entry, entry.id));
  });
};
