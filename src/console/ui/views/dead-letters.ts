/**
 * Dead letters: why each job is there and its history; redrive one, the selected, or all. Below,
 * the messages that are not jobs at all (invalid envelopes): their bytes, as text; discard one.
 */
import { api } from "../api.ts";
import type { ConsoleDeadLetterList, ConsoleInvalidDeadLetter, ConsoleMessageBody } from "../../api-types.ts";
import type { App } from "../app.ts";
import { h, replace, tableHead, tableRow } from "../dom.ts";
import type { Column } from "../dom.ts";
import { jobLink, time } from "../format.ts";
import { debounce } from "../live.ts";
import type { View } from "../main.ts";

type ConsoleDeadLetter = ConsoleDeadLetterList["deadLetters"][number];

function history(letter: ConsoleDeadLetter): HTMLElement | string {
  const attempts = letter.attempts ?? [];
  if (attempts.length === 0) return letter.redrives > 0 ? `redriven ${letter.redrives}×` : "—";
  return h(
    "ol",
    { class: "plain history" },
    attempts.map((a) =>
      h("li", {}, `#${a.number}${a.round > 0 ? ` (round ${a.round + 1})` : ""} ${a.outcome ?? "running"}${a.workerId ? ` on ${a.workerId}` : ""}${a.error ? `: ${a.error.message}` : ""}`),
    ),
  );
}

/** Redrives `ids`, or every dead letter when `ids` is undefined (the server's list, not the page's). */
async function redrive(app: App, ids: string[] | undefined, after: () => void): Promise<void> {
  if (ids?.length === 0) return;
  const what = ids === undefined ? "Redrive every dead letter" : `Redrive ${ids.length} job${ids.length === 1 ? "" : "s"}`;
  const result = await app.run(what, () => api.redrive(ids));
  if (result) app.toast(`Redriven: ${result.redriven.length}${result.missing.length > 0 ? `; no longer in the dead-letter queue: ${result.missing.length}` : ""}.`);
  after();
}

function bodyText(body: ConsoleMessageBody): string {
  if (body.shown === "hidden") return `(content hidden: not a job envelope, shown only to who may discard it; sha256 ${body.sha256})`;
  const text = body.encoding === "base64" ? `(not UTF-8; base64) ${body.data}` : body.data;
  return body.shown === "redacted" ? `(payload and result redacted) ${text}` : text;
}

function size(bytes: number): string {
  return bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} KiB`;
}

/** The messages that are not valid jobs: no record, no redrive; their bytes shown as text, and a discard. */
function invalidSection(app: App): { section: HTMLElement; load: () => Promise<void> } {
  const content = h("div", {});
  const section = h(
    "section",
    { "aria-labelledby": "invalid-title", class: "invalid-dead-letters" },
    h("h2", { id: "invalid-title" }, "Messages that are not jobs"),
    h("p", { class: "hint" }, "Moved aside by the queue because they are not valid job envelopes: nothing can run them. Read them, then discard them."),
    content,
  );
  const discard = async (letter: ConsoleInvalidDeadLetter) => {
    const confirmed = await app.confirm({
      title: "Discard this message?",
      body: h("p", {}, `Message ${letter.id} (${size(letter.body.bytes)}) leaves the dead-letter queue for good.`),
      confirmLabel: "Discard",
      danger: true,
    });
    if (confirmed && (await app.run("Discard", () => api.discardDeadLetter(letter.id)))) await load();
  };
  const columns: ReadonlyArray<Column<ConsoleInvalidDeadLetter>> = [
    { label: "Message", cell: (d) => h("span", { class: "mono break" }, d.id) },
    { label: "Reason", cell: (d) => d.reason },
    { label: "Dead-lettered", cell: (d) => time(d.deadLetteredAt) },
    { label: "Size", cell: (d) => size(d.body.bytes), className: "nowrap" },
    {
      label: "Content",
      cell: (d) => {
        const pre = h("pre", { class: "data message-body", "data-testid": "message-body", tabindex: 0, "aria-label": `Content of message ${d.id}` }, bodyText(d.body), d.body.cut ? " …" : "");
        if (!d.body.cut) return pre;
        const whole = h("button", { type: "button", "aria-label": `Show all of message ${d.id}` }, "Show all");
        whole.addEventListener("click", () => {
          void api.invalidDeadLetter(d.id).then(
            (full) => {
              replace(pre, bodyText(full.body), full.body.cut ? " …" : "");
              whole.remove();
            },
            (error: unknown) => app.toast(`Reading the message failed: ${error instanceof Error ? error.message : String(error)}`, "error"),
          );
        });
        return [pre, whole];
      },
    },
    { label: "Actions", cell: (d) => app.actionButton("discard", "Discard…", () => void discard(d), { "aria-label": `Discard message ${d.id}` }) },
  ];
  const load = async () => {
    const list = await api.invalidDeadLetters();
    if (!list.supported) {
      replace(content, h("p", { class: "empty" }, "This queue cannot list its dead letters."));
      return;
    }
    const note = list.more ? h("p", { class: "hint" }, `Among the oldest ${list.scanned} dead letters; more are queued behind them.`) : null;
    if (list.invalid.length === 0) {
      replace(content, h("p", { class: "empty" }, "None."), note);
      return;
    }
    const visible = list.discardable ? columns : columns.filter((c) => c.label !== "Actions");
    replace(
      content,
      h("table", { class: "grid" }, h("caption", { class: "visually-hidden" }, "Dead letters that are not valid jobs, oldest first"), tableHead(visible), h("tbody", {}, list.invalid.map((d) => tableRow(visible, d, d.id)))),
      note,
    );
  };
  return { section, load };
}

/** The dead-letter queue, a page at a time. */
export const deadLettersView: View = async (app, root) => {
  const summary = h("p", { class: "summary", role: "status" });
  const results = h("div", {});
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const selected = new Set<string>();
  const redriveSelected = app.actionButton("redrive", "Redrive selected", () => void redrive(app, [...selected], () => refresh()));
  const sync = () => {
    if (app.can("redrive")) redriveSelected.disabled = selected.size === 0;
  };
  const redriveAll = app.actionButton("redrive", "Redrive all…", async () => {
    const confirmed = await app.confirm({
      title: "Redrive every dead letter?",
      body: h("p", {}, "Every job in the dead-letter queue goes back to the queue and runs again (a new round of attempts)."),
      confirmLabel: "Redrive all",
    });
    if (confirmed) await redrive(app, undefined, () => refresh());
  });
  const columns: ReadonlyArray<Column<ConsoleDeadLetter>> = [
    {
      label: "Select",
      cell: (d) => {
        const box = h("input", { type: "checkbox", "aria-label": `Select job ${d.jobId}`, disabled: !app.can("redrive"), checked: selected.has(d.jobId) });
        box.addEventListener("change", () => {
          if (box.checked) selected.add(d.jobId);
          else selected.delete(d.jobId);
          sync();
        });
        return box;
      },
    },
    { label: "Job", cell: (d) => jobLink(d.jobId), className: "nowrap" },
    { label: "Type", cell: (d) => d.type },
    { label: "Reason", cell: (d) => d.reason },
    { label: "Dead-lettered", cell: (d) => time(d.deadLetteredAt) },
    { label: "History", cell: history },
    { label: "Actions", cell: (d) => app.actionButton("redrive", "Redrive", () => void redrive(app, [d.jobId], () => refresh()), { "aria-label": `Redrive job ${d.jobId}` }) },
  ];
  let tbody: HTMLTableSectionElement | undefined;
  let cursor: string | undefined;
  let shown = 0;

  const load = async (fresh: boolean) => {
    const page = await api.deadLetters(fresh ? undefined : cursor);
    if (fresh) {
      tbody = undefined;
      shown = 0;
      selected.clear();
      sync();
    }
    cursor = page.nextCursor;
    if (page.deadLetters.length > 0 && !tbody) {
      tbody = h("tbody", {});
      replace(results, h("table", { class: "grid" }, h("caption", { class: "visually-hidden" }, "Jobs in the dead-letter queue, newest first"), tableHead(columns), tbody));
    } else if (!tbody) {
      replace(results, h("p", { class: "empty" }, "The dead-letter queue is empty."));
    }
    tbody?.append(...page.deadLetters.map((d) => tableRow(columns, d, d.jobId)));
    shown += page.deadLetters.length;
    more.hidden = cursor === undefined;
    redriveAll.hidden = shown === 0;
    redriveSelected.hidden = shown === 0;
    summary.textContent = `${shown} job${shown === 1 ? "" : "s"} in the dead-letter queue${cursor ? " shown (more below)" : ""}.`;
  };
  const refresh = debounce(() => void load(true).catch(() => {}), 300);
  more.addEventListener("click", () => void load(false).catch((error: unknown) => app.toast(`Loading more failed: ${error instanceof Error ? error.message : String(error)}`, "error")));

  const invalid = invalidSection(app);
  replace(root, h("h1", {}, "Dead letters"), summary, h("div", { class: "buttons", role: "group", "aria-label": "Redrive" }, redriveSelected, redriveAll), results, more, invalid.section);
  await Promise.all([load(true), invalid.load()]);
  const offs = [
    app.live.on("job", (event) => {
      if (event.kind === "result" || (event.kind === "state" && event.state === "queued")) refresh();
    }),
    app.live.on("resync", refresh),
  ];
  return () => {
    for (const off of offs) off();
    refresh.cancel();
  };
};
