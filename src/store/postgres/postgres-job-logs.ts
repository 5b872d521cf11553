import type { WaitOptions } from "../../queue/types.ts";
import { checkString } from "../../validate.ts";
import { checkLogLines } from "../job-logs.ts";
import type { JobLogLine } from "../types.ts";
import type { StoreQuery } from "./postgres-console-records.ts";

/**
 * {@link JobStore.appendLogs} and {@link JobStore.logs} in the job store's schema: table
 * `job_logs`, one row per line keyed by (job, fencing token, seq), removed with its job's row
 * (`ON DELETE CASCADE`). `PostgresJobStore` delegates to it. @internal
 */
export class PostgresJobLogs {
  readonly #query: StoreQuery;
  readonly #schema: string;
  readonly #maxLines: number;

  /** @param schema the quoted schema name */
  constructor(query: StoreQuery, schema: string, maxLines: number) {
    this.#query = query;
    this.#schema = schema;
    this.#maxLines = maxLines;
  }

  async append(jobId: string, lines: readonly JobLogLine[], options: WaitOptions = {}): Promise<void> {
    const input = checkLogLines(jobId, lines);
    if (this.#maxLines === 0 || input.lines.length === 0) return;
    const s = this.#schema;
    const added = await this.#query(
      "keeping log lines",
      options,
      `INSERT INTO ${s}.job_logs (job_id, fencing_token, seq, at, attempt, stream, line)
       SELECT $1, l.fencing_token, l.seq, l.at, l.attempt, l.stream, l.line
       FROM jsonb_to_recordset($2::jsonb) AS l(fencing_token bigint, seq integer, at bigint, attempt integer, stream text, line text)
       WHERE EXISTS (SELECT 1 FROM ${s}.jobs WHERE id = $1)
       ON CONFLICT DO NOTHING
       RETURNING 1`,
      [input.jobId, JSON.stringify(input.lines.map((l) => ({ fencing_token: l.fencingToken, seq: l.seq, at: l.at, attempt: l.attempt, stream: l.stream ?? null, line: l.line })))],
    );
    if (added.length === 0) return;
    // All but the latest `maxLines`: the row at that offset from the newest is the oldest kept.
    await this.#query(
      "trimming log lines",
      options,
      `DELETE FROM ${s}.job_logs WHERE job_id = $1
         AND (fencing_token, seq) < (SELECT fencing_token, seq FROM ${s}.job_logs WHERE job_id = $1 ORDER BY fencing_token DESC, seq DESC OFFSET $2 LIMIT 1)`,
      [input.jobId, this.#maxLines - 1],
    );
  }

  async read(jobId: string, options: WaitOptions = {}): Promise<JobLogLine[]> {
    const rows = await this.#query<{ fencing_token: string; seq: number; at: string; attempt: number; stream: string | null; line: string }>(
      "reading log lines",
      options,
      `SELECT fencing_token, seq, at, attempt, stream, line FROM ${this.#schema}.job_logs WHERE job_id = $1 ORDER BY fencing_token, seq`,
      [checkString("jobId", jobId, 256)],
    );
    return rows.map((r) => ({
      at: Number(r.at), attempt: r.attempt, fencingToken: Number(r.fencing_token), seq: r.seq, line: r.line,
      ...(r.stream === "stdout" || r.stream === "stderr" ? { stream: r.stream } : {}),
    }));
  }
}
