/**
 * What every view gets: the session (what this user may do), the live stream, and the page's ways
 * to act and to tell: action buttons that respect read-only mode, a modal dialog to confirm, and
 * announcements in a live region.
 */
import { ApiError } from "./api.ts";
import type { ConsoleSession } from "../api-types.ts";
import { h } from "./dom.ts";
import type { Child } from "./dom.ts";
import type { Live } from "./live.ts";

/** The actions a session may be allowed. */
export type ActionKind = keyof ConsoleSession["actions"];

/** The page's shared services, handed to each view. */
export interface App {
  readonly session: ConsoleSession;
  readonly live: Live;
  /** Whether this session may run `action`. */
  can(action: ActionKind): boolean;
  /** Announces `text` (polite; errors assertively). */
  toast(text: string, kind?: "ok" | "error"): void;
  /**
   * Runs an action, announcing how it went; resolves with its result, or undefined when it failed
   * (a 403 is explained as a refusal).
   */
  run<T>(what: string, fn: () => Promise<T>): Promise<T | undefined>;
  /** A button for `action`: disabled, with the reason, when the session may not run it. */
  actionButton(action: ActionKind, label: string, onClick: () => void, attributes?: Record<string, string>): HTMLButtonElement;
  /**
   * A modal dialog with `body` (form fields included) and a confirm button; resolves with the form's
   * data when confirmed, undefined when dismissed.
   */
  confirm(options: { title: string; body: Child; confirmLabel: string; danger?: boolean }): Promise<FormData | undefined>;
}

/** Builds the {@link App} of the page. */
export function createApp(session: ConsoleSession, live: Live, toasts: HTMLElement): App {
  const can = (action: ActionKind) => !session.readOnly && session.actions[action] === true;
  const toast = (text: string, kind: "ok" | "error" = "ok") => {
    const item = h("p", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : undefined }, text);
    toasts.append(item);
    setTimeout(() => item.remove(), kind === "error" ? 12_000 : 6000);
  };
  return {
    session,
    live,
    can,
    toast,
    async run(what, fn) {
      try {
        const result = await fn();
        toast(`${what}: done`);
        return result;
      } catch (error) {
        if (error instanceof ApiError && error.status === 403) toast(`${what}: refused (403 ${error.code}): ${error.message}`, "error");
        else toast(`${what} failed: ${error instanceof Error ? error.message : String(error)}`, "error");
        return undefined;
      }
    },
    actionButton(action, label, onClick, attributes = {}) {
      const allowed = can(action);
      const button = h(
        "button",
        { type: "button", class: "action", disabled: !allowed, title: allowed ? undefined : "Read-only: you may not do this here", ...attributes },
        label,
      );
      if (allowed) button.addEventListener("click", onClick);
      return button;
    },
    confirm({ title, body, confirmLabel, danger }) {
      const titleId = `dialog-${Math.random().toString(36).slice(2)}`;
      const form = h(
        "form",
        { method: "dialog" },
        h("h2", { id: titleId }, title),
        body,
        h(
          "div",
          { class: "buttons" },
          h("button", { type: "submit", value: "confirm", class: danger ? "danger" : "primary" }, confirmLabel),
          h("button", { type: "submit", value: "cancel", formnovalidate: true }, "Cancel"),
        ),
      );
      const dialog = h("dialog", { "aria-labelledby": titleId }, form);
      document.body.append(dialog);
      dialog.showModal();
      return new Promise((resolve) => {
        dialog.addEventListener(
          "close",
          () => {
            const confirmed = dialog.returnValue === "confirm";
            const data = new FormData(form);
            dialog.remove();
            resolve(confirmed ? data : undefined);
          },
          { once: true },
        );
      });
    },
  };
}
