import { OrchestratorError } from "../errors.ts";
import { checkFunction, checkString } from "../validate.ts";

/** One stretch of time during which a candidate leads. */
export interface LeaderTerm {
  /**
   * Aborted when the term ends: leadership lost (connection or channel gone), resigned, or the
   * election closed. Its reason is an `OrchestratorError` saying why.
   */
  readonly signal: AbortSignal;
  /** Epoch ms when the term began. */
  readonly since: number;
}

/** A candidate in an election, as {@link Leadership.campaign} returns it. */
export interface Candidacy {
  /** The term in progress when this candidate leads, else undefined. */
  readonly term: LeaderTerm | undefined;
  /** Leaves the election: a term in progress ends (its signal aborts) and another candidate may lead. Idempotent. */
  resign(): Promise<void>;
}

/**
 * Elects one leader among the candidates (usually one per process) campaigning under the same
 * name: the seam the `Scheduler` uses so that one orchestrator at a time fires ticks.
 *
 * Semantics every implementation keeps:
 * - at most one candidate of a name leads at a time, as far as the coordinating service knows;
 *   a candidate cut off from it may believe it leads until it notices, so work done while
 *   leading must stay safe when done twice (the scheduler's deterministic job ids make it so);
 * - when the leader resigns or dies, another candidate becomes leader without anyone's help;
 * - `onTerm` is called once per term, and never throws into the election (a throw is reported
 *   through the implementation's error channel).
 *
 * Implementations: {@link MemoryLeadership} (one process), `AmqpLeadership` (RabbitMQ).
 */
export interface Leadership {
  /**
   * Joins the election `name`. Resolves once joined, whether or not leading; `onTerm` is called
   * each time this candidate becomes leader.
   * @throws {OrchestratorError} `invalid_argument` for a bad name; what the coordinating service
   * rejects with.
   */
  campaign(name: string, onTerm: (term: LeaderTerm) => void): Promise<Candidacy>;
}

interface MemoryCandidate {
  readonly onTerm: (term: LeaderTerm) => void;
  controller: AbortController | undefined;
  term: LeaderTerm | undefined;
  resigned: boolean;
}

/**
 * A {@link Leadership} inside one process: the first candidate of a name leads; when it
 * resigns, the next in line does. For a single orchestrator, and for tests that run several
 * schedulers against one in-memory queue (`elect()` hands over on command).
 */
export class MemoryLeadership implements Leadership {
  readonly #lines = new Map<string, MemoryCandidate[]>();

  campaign(name: string, onTerm: (term: LeaderTerm) => void): Promise<Candidacy> {
    try {
      checkString("name", name, 200);
      checkFunction("onTerm", onTerm);
    } catch (error) {
      return Promise.reject(error);
    }
    const candidate: MemoryCandidate = { onTerm, controller: undefined, term: undefined, resigned: false };
    const line = this.#lines.get(name) ?? [];
    this.#lines.set(name, line);
    line.push(candidate);
    if (line.length === 1) queueMicrotask(() => this.#begin(name, candidate));
    const candidacy: Candidacy = {
      get term() {
        return candidate.term;
      },
      resign: async () => this.#resign(name, candidate),
    };
    return Promise.resolve(candidacy);
  }

  /** The name's leader steps down in favour of the next candidate (as if its process died); for tests. */
  handOver(name: string): void {
    const line = this.#lines.get(name);
    const leader = line?.[0];
    if (line === undefined || leader === undefined || line.length < 2) return;
    line.shift();
    line.push(leader);
    this.#end(leader, "handed over");
    queueMicrotask(() => this.#begin(name, line[0] as MemoryCandidate));
  }

  #begin(name: string, candidate: MemoryCandidate): void {
    if (candidate.resigned || this.#lines.get(name)?.[0] !== candidate || candidate.term !== undefined) return;
    candidate.controller = new AbortController();
    candidate.term = { signal: candidate.controller.signal, since: Date.now() };
    try {
      candidate.onTerm(candidate.term);
    } catch {
      // A listener's throw must not stop the election.
    }
  }

  #end(candidate: MemoryCandidate, why: string): void {
    const controller = candidate.controller;
    candidate.controller = undefined;
    candidate.term = undefined;
    controller?.abort(new OrchestratorError("unavailable", `leadership ended: ${why}`, { details: { reason: "leadership_lost" } }));
  }

  #resign(name: string, candidate: MemoryCandidate): void {
    if (candidate.resigned) return;
    candidate.resigned = true;
    const line = this.#lines.get(name) ?? [];
    const wasLeader = line[0] === candidate;
    line.splice(line.indexOf(candidate), 1);
    if (line.length === 0) this.#lines.delete(name);
    this.#end(candidate, "resigned");
    const next = line[0];
    if (wasLeader && next !== undefined) queueMicrotask(() => this.#begin(name, next));
  }
}
