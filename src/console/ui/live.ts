/**
 * The live stream: one `EventSource` on `api/events` for the whole page, fanned out to the views
 * that listen. The browser reconnects by itself; after a reconnect the views hear `resync`, since
 * they may have missed events while the stream was down.
 */
import type { ConsoleJobEvent, ConsoleStreamEvents } from "../api-types.ts";

/** What each kind of live event carries: the stream's own, and `resync` after a reconnect. */
export interface LiveEvents extends ConsoleStreamEvents {
  resync: Record<string, never>;
}

type Listener<K extends keyof LiveEvents> = (event: LiveEvents[K]) => void;

/** Job events kept for {@link Live.recentJobEvents}. */
const RECENT_JOB_EVENTS = 2000;

/** The page's one connection to `api/events`. */
export class Live {
  readonly #listeners = new Map<keyof LiveEvents, Set<Listener<never>>>();
  readonly #recent: ConsoleJobEvent[] = [];
  readonly #status: HTMLElement;
  #source: EventSource | undefined;
  #lost = false;

  constructor(status: HTMLElement) {
    this.#status = status;
  }

  /** Opens the stream (once). */
  start(url = "api/events"): void {
    if (this.#source) return;
    const source = new EventSource(url);
    this.#source = source;
    source.addEventListener("open", () => {
      this.#setStatus("Live", "live");
      if (this.#lost) {
        this.#lost = false;
        this.#emit("resync", {});
      }
    });
    source.addEventListener("error", () => {
      this.#lost = true;
      this.#setStatus(source.readyState === EventSource.CLOSED ? "Disconnected: reload the page" : "Reconnecting…", "down");
    });
    for (const kind of ["job", "worker", "overview", "audit"] as const) {
      source.addEventListener(kind, (message) => {
        let data: unknown;
        try {
          data = JSON.parse((message as MessageEvent<string>).data);
        } catch {
          return;
        }
        if (kind === "job") {
          this.#recent.push(data as ConsoleJobEvent);
          if (this.#recent.length > RECENT_JOB_EVENTS) this.#recent.splice(0, this.#recent.length - RECENT_JOB_EVENTS);
        }
        this.#emit(kind, data as LiveEvents[typeof kind]);
      });
    }
  }

  /**
   * The job events of `jobId` seen at or after `since` (epoch ms), oldest first. A record fetched
   * from the store can be older than the events that already went by (the store writes
   * progress and starts a moment later, and an event can arrive while a fetch is under way): a
   * view applies these to what it fetched, so it never shows a job behind the stream.
   */
  recentJobEvents(jobId: string, since: number): ConsoleJobEvent[] {
    return this.#recent.filter((e) => e.jobId === jobId && e.at >= since);
  }

  /** Calls `listener` for each event of `kind`; returns what removes it. */
  on<K extends keyof LiveEvents>(kind: K, listener: Listener<K>): () => void {
    let set = this.#listeners.get(kind);
    if (!set) this.#listeners.set(kind, (set = new Set()));
    set.add(listener as Listener<never>);
    return () => set.delete(listener as Listener<never>);
  }

  #emit<K extends keyof LiveEvents>(kind: K, event: LiveEvents[K]): void {
    for (const listener of this.#listeners.get(kind) ?? []) {
      try {
        (listener as Listener<K>)(event);
      } catch (error) {
        console.error(error);
      }
    }
  }

  #setStatus(text: string, state: "live" | "down"): void {
    if (this.#status.textContent === text) return;
    this.#status.textContent = text;
    this.#status.dataset.state = state;
  }
}

/** Runs `fn` at most once per `ms`, after the last call (coalesces bursts of events into one refetch). */
export function debounce(fn: () => void, ms: number): { (): void; cancel(): void } {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const call = () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      fn();
    }, ms);
  };
  call.cancel = () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
  };
  return call;
}
