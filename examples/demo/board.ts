/**
 * The demo's live terminal board: one row per job with a progress bar, redrawn in place at
 * most ten times a second on a TTY. Without a TTY (CI, a pipe) it prints one line per state
 * change instead, so logs stay readable.
 */

export interface JobRow {
  id: string;
  label: string;
  state: string;
  worker: string;
  attempt: number;
  progress: number;
  note: string;
}

export interface WorkerRow {
  id: string;
  state: string;
  running: number;
}

const colours: Record<string, string> = {
  queued: "\x1b[90m",
  running: "\x1b[36m",
  retrying: "\x1b[33m",
  completed: "\x1b[32m",
  failed: "\x1b[31m",
  cancelled: "\x1b[35m",
  idle: "\x1b[32m",
  busy: "\x1b[36m",
  unhealthy: "\x1b[31m",
  draining: "\x1b[33m",
  removed: "\x1b[90m",
};
const reset = "\x1b[0m";

function bar(progress: number, width: number): string {
  const filled = Math.round(Math.max(0, Math.min(1, progress)) * width);
  return `${"█".repeat(filled)}${"░".repeat(width - filled)}`;
}

/**
 * Cuts `line` to `columns - 1` visible characters (escape codes kept, colour reset after a cut):
 * a line that wrapped would break the cursor arithmetic of the redraw, leaving copies behind.
 */
export function fit(line: string, columns: number): string {
  const limit = Math.max(1, columns - 1);
  let visible = 0;
  let out = "";
  for (let i = 0; i < line.length; i++) {
    if (line[i] === "\x1b") {
      const end = line.indexOf("m", i);
      if (end !== -1) {
        out += line.slice(i, end + 1);
        i = end;
        continue;
      }
    }
    if (visible === limit) return `${out}${reset}`;
    out += line[i];
    visible++;
  }
  return out;
}

function pad(text: string, width: number): string {
  return text.length >= width ? text.slice(0, width) : text + " ".repeat(width - text.length);
}

export class Board {
  readonly #out: NodeJS.WriteStream;
  readonly #tty: boolean;
  readonly #jobs = new Map<string, JobRow>();
  readonly #workers = new Map<string, WorkerRow>();
  readonly #events: string[] = [];
  #drawnLines = 0;
  #timer: NodeJS.Timeout | undefined;
  #dirty = false;
  #title: string;

  constructor(title: string, out: NodeJS.WriteStream = process.stdout, options: { tty?: boolean } = {}) {
    this.#title = title;
    this.#out = out;
    this.#tty = options.tty ?? (out.isTTY === true && process.env.CI !== "true");
    if (this.#tty) {
      this.#timer = setInterval(() => this.#flush(), 100);
      this.#timer.unref();
    } else {
      out.write(`${title}\n`);
    }
  }

  job(id: string, patch: Partial<JobRow>): void {
    const existing = this.#jobs.get(id);
    const row = existing ?? { id, label: id, state: "queued", worker: "", attempt: 1, progress: 0, note: "" };
    const before = row.state;
    // "queued" comes from the producer once submit() returned, which may be after the job already
    // started: it never overrides a later state.
    if (existing !== undefined && patch.state === "queued" && before !== "queued") patch = { ...patch, state: before };
    Object.assign(row, patch);
    this.#jobs.set(id, row);
    if (!this.#tty && patch.state !== undefined && patch.state !== before) {
      this.#out.write(`  ${pad(row.label, 22)} ${pad(row.state, 9)} ${row.worker ? `on ${row.worker}` : ""}${row.attempt > 1 ? ` attempt ${row.attempt}` : ""}${row.note ? ` (${row.note})` : ""}\n`);
    }
    this.#dirty = true;
  }

  worker(id: string, patch: Partial<WorkerRow>): void {
    const row = this.#workers.get(id) ?? { id, state: "idle", running: 0 };
    Object.assign(row, patch);
    this.#workers.set(id, row);
    this.#dirty = true;
  }

  /** A notable event (eviction, cancel): kept in a short list under the table. */
  event(text: string): void {
    const line = `${new Date().toISOString().slice(11, 23)} ${text}`;
    this.#events.push(line);
    if (this.#events.length > 6) this.#events.shift();
    if (!this.#tty) this.#out.write(`» ${text}\n`);
    this.#dirty = true;
  }

  rows(): JobRow[] {
    return [...this.#jobs.values()];
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    if (this.#tty) {
      this.#dirty = true;
      this.#flush();
    }
  }

  #flush(): void {
    if (!this.#dirty) return;
    this.#dirty = false;
    const lines: string[] = [this.#title, ""];
    const workers = [...this.#workers.values()]
      .map((w) => `${colours[w.state] ?? ""}${w.id}: ${w.state}${reset}${w.running ? ` (${w.running} running)` : ""}`)
      .join("   ");
    lines.push(`workers  ${workers}`, "");
    lines.push(`  ${pad("job", 22)} ${pad("state", 10)} ${pad("worker", 8)} ${pad("try", 4)} progress`);
    for (const row of this.#jobs.values()) {
      const colour = colours[row.state] ?? "";
      lines.push(
        `  ${pad(row.label, 22)} ${colour}${pad(row.state, 10)}${reset} ${pad(row.worker, 8)} ${pad(String(row.attempt), 4)} ${bar(row.progress, 24)} ${pad(row.note, 28)}`,
      );
    }
    lines.push("", ...this.#events);
    let text = this.#drawnLines > 0 ? `\x1b[${this.#drawnLines}F` : "";
    const columns = this.#out.columns ?? 80;
    text += lines.map((line) => `${fit(line, columns)}\x1b[K`).join("\n") + "\n";
    this.#out.write(text);
    this.#drawnLines = lines.length;
  }
}
