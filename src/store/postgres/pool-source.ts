import type { Pool } from "pg";
import { OrchestratorError } from "../../errors.ts";
import { checkInteger, checkObject, checkString, optional } from "../../validate.ts";

/**
 * Where a PostgreSQL store gets its `pg` pool, in one place for every store of this subpath: a
 * pool passed in (`pool`, the caller's: never ended here) or one opened lazily from
 * `connectionString` (`poolSize` connections, ended by `end()`). `pg` is loaded on first use
 * only, so it stays an optional peer.
 * @internal
 */
export class PgPoolSource {
  readonly #connectionString: string | undefined;
  readonly #poolSize: number;
  readonly #owned: boolean;
  #pool: Pool | undefined;
  #ready: Promise<Pool> | undefined;
  readonly #onPoolError = (): void => {
    // An idle connection died; the pool drops it and the next query opens another.
  };

  /** Checks `pool` / `connectionString` / `poolSize` of `options`. @throws {OrchestratorError} `invalid_argument` naming the option. */
  constructor(options: Record<string, unknown>, defaultPoolSize: number) {
    this.#poolSize = optional(options.poolSize, defaultPoolSize, (v) => checkInteger("poolSize", v, 1, 1000));
    if (options.pool !== undefined) {
      const pool = checkObject("pool", options.pool);
      if (typeof pool.query !== "function" || typeof pool.connect !== "function") {
        throw new OrchestratorError("invalid_argument", "Expected `pool` to be a pg Pool (with query() and connect())", { details: { field: "pool" } });
      }
      this.#pool = options.pool as Pool;
      this.#owned = false;
      this.#connectionString = undefined;
    } else {
      this.#connectionString = checkString("connectionString", options.connectionString, 4096);
      this.#owned = true;
    }
  }

  /** The pool, opened on the first call. @throws {OrchestratorError} `precondition_failed` without the `pg` package. */
  get(what: string): Promise<Pool> {
    if (this.#pool !== undefined && this.#ready === undefined) {
      this.#pool.on("error", this.#onPoolError);
      this.#ready = Promise.resolve(this.#pool);
    }
    this.#ready ??= import("pg").then(
      (pg) => {
        const PoolClass = (pg.default?.Pool ?? (pg as unknown as { Pool: typeof Pool }).Pool) as typeof Pool;
        const pool = new PoolClass({ connectionString: this.#connectionString, max: this.#poolSize });
        pool.on("error", this.#onPoolError);
        this.#pool = pool;
        return pool;
      },
      (cause: unknown) => {
        throw new OrchestratorError("precondition_failed", `${what} needs the \`pg\` package: npm install pg`, { cause });
      },
    );
    return this.#ready;
  }

  /** Ends the pool opened here (a pool passed in stays open). */
  async end(): Promise<void> {
    const pool = this.#pool ?? (await this.#ready?.catch(() => undefined));
    if (pool === undefined) return;
    pool.off("error", this.#onPoolError);
    if (this.#owned) await pool.end().catch(() => {});
  }
}
