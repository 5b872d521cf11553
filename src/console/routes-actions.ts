import { OrchestratorError } from "../errors.ts";
import { dueTimeOf } from "../job/due-time.ts";
import { checkPriority } from "../job/envelope.ts";
import { FINAL_STATES, type JobRecord, type JobRecordState } from "../store/types.ts";
import { checkInteger, checkLabels, checkObject, checkString, optional } from "../validate.ts";
import type { ConsoleCore, RouteContext } from "./console.ts";
import { HttpError, sendJson } from "./http.ts";
import { DEAD_LETTER_SCAN, findInvalidDeadLetter } from "./invalid-dead-letters.ts";
import { checkConsoleFilter, storeFilter } from "./job-views.ts";
import type { ConsoleBulkPreview, ConsoleBulkResult, ConsoleJobFilter } from "./api-types.ts";
import type { ConsoleAction } from "./types.ts";

/** Most jobs one bulk action covers. */
export const BULK_LIMIT = 10_000;
/** Most records a bulk preview or action reads, those it would act on and those it leaves out alike. */
export const BULK_SCAN_LIMIT = 2 * BULK_LIMIT;
const SAMPLE = 20;
const UNFINISHED: readonly JobRecordState[] = ["scheduled", "queued", "unschedulable", "running", "retrying"];
const RETRYABLE: readonly JobRecordState[] = ["failed", "cancelled"];

/**
 * Whether a retry can run the job as it was: a dead letter is redriven from its own message; any
 * other job is submitted again from its record, which must hold the job's own payload.
 */
function canRetry(record: JobRecord): boolean {
  return record.deadLetter !== undefined || (record.payloadOmitted !== true && record.payloadRedacted !== true);
}

function only(body: Record<string, unknown>, allowed: readonly string[]): void {
  for (const key of Object.keys(body)) {
    if (!allowed.includes(key)) throw new HttpError(400, "invalid_argument", `Unknown field \`${key}\` (expected ${allowed.join(", ") || "none"})`);
  }
}

/**
 * The console's mutating routes: each is authorized, runs through the SDK call code would use
 * (`JobClient.submit`, `JobHandle.cancel`, `JobClient.redrive`, the pool bus's drain), and is
 * audited with its outcome. @internal
 */
export class ActionRoutes {
  readonly #core: ConsoleCore;

  constructor(core: ConsoleCore) {
    this.#core = core;
  }

  /** Authorizes, runs, and audits one action; a failure is audited and rethrown. */
  async #act<T>(ctx: RouteContext, action: ConsoleAction, run: () => Promise<{ value: T; detail?: string }>, reason?: string): Promise<T> {
    await this.#core.authorize(ctx, action);
    const who = await ctx.who();
    const base = {
      who,
      action: action.kind,
      ...(action.target === undefined ? {} : { target: action.target }),
      ...(action.bulk === undefined ? {} : { filter: action.bulk.filter as Record<string, unknown>, count: action.bulk.count }),
    };
    try {
      const { value, detail } = await run();
      const text = [reason, detail].filter((t) => t !== undefined && t !== "").join("; ");
      await this.#core.audit.write({ ...base, outcome: "ok", ...(text === "" ? {} : { detail: text }) });
      return value;
    } catch (error) {
      const message = error instanceof HttpError ? error.message : OrchestratorError.from(error).rawMessage;
      await this.#core.audit.write({ ...base, outcome: "failed", detail: [reason, message].filter((t) => t !== undefined && t !== "").join("; ") });
      throw error;
    }
  }

  async submit(ctx: RouteContext): Promise<void> {
    const body = await ctx.body();
    only(body, ["type", "payload", "id", "maxAttempts", "timeoutMs", "startTimeoutMs", "metadata", "labels", "idempotencyKey", "priority", "runAt", "delayMs"]);
    const type = checkString("type", body.type, 256);
    if (!("payload" in body)) throw new HttpError(400, "invalid_argument", "Expected `payload` (any JSON value)");
    const spec = {
      type,
      payload: body.payload,
      ...(body.id === undefined ? {} : { id: checkString("id", body.id, 256) }),
      ...(body.maxAttempts === undefined ? {} : { maxAttempts: checkInteger("maxAttempts", body.maxAttempts, 1, 1000) }),
      ...(body.timeoutMs === undefined ? {} : { timeoutMs: checkInteger("timeoutMs", body.timeoutMs, 1) }),
      ...(body.startTimeoutMs === undefined ? {} : { startTimeoutMs: checkInteger("startTimeoutMs", body.startTimeoutMs, 1) }),
      ...(body.metadata === undefined ? {} : { metadata: checkLabels("metadata", body.metadata) }),
      ...(body.labels === undefined ? {} : { labels: checkLabels("labels", body.labels) }),
      ...(body.idempotencyKey === undefined ? {} : { idempotencyKey: checkString("idempotencyKey", body.idempotencyKey, 512) }),
      ...(body.priority === undefined ? {} : { priority: checkPriority("priority", body.priority) }),
      ...(body.runAt === undefined ? {} : { runAt: body.runAt as number | string }),
      ...(body.delayMs === undefined ? {} : { delayMs: body.delayMs as number }),
    };
    // Checked here, before the action is authorized and audited: the one rule `submit` applies.
    dueTimeOf(spec.runAt, spec.delayMs, Date.now());
    const id = await this.#act(ctx, { kind: "submit", target: type }, async () => {
      const handle = await this.#core.client.submit(spec);
      return { value: handle.id, detail: `submitted ${handle.id}` };
    });
    sendJson(ctx.res, 201, { id });
  }

  async cancel(ctx: RouteContext): Promise<void> {
    const body = await ctx.body();
    only(body, ["reason"]);
    const reason = optional(body.reason, undefined, (v) => checkString("reason", v, 1000));
    const id = ctx.param;
    await this.#act(ctx, { kind: "cancel", target: id }, () => this.#cancel(id, reason), reason);
    sendJson(ctx.res, 200, { id, sent: true });
  }

  async #cancel(id: string, reason: string | undefined): Promise<{ value: undefined }> {
    const record = await this.#record(id);
    if (FINAL_STATES.has(record.state)) throw new HttpError(409, "already_finished", `Job ${id} already ended (${record.state})`);
    const handle = await this.#core.client.get(id);
    if (handle === undefined) throw new HttpError(404, "not_found", `No job ${id}`);
    await handle.cancel("requested", reason === undefined ? {} : { message: reason });
    return { value: undefined };
  }

  async retry(ctx: RouteContext): Promise<void> {
    const body = await ctx.body();
    only(body, []);
    const id = ctx.param;
    const result = await this.#act(ctx, { kind: "retry", target: id }, async () => {
      const value = await this.#retry(id);
      return { value, detail: value.newId === undefined ? "redriven" : `resubmitted as ${value.newId}` };
    });
    sendJson(ctx.res, 200, { id, ...result });
  }

  /**
   * A dead letter is redriven (its original message runs again); a failed or cancelled job not in
   * the dead-letter queue is submitted again as a new job from its record, unless the record does
   * not hold the job's own payload (redacted by the store's hook, or too large to keep): then the
   * console refuses (409) rather than run the job on something else.
   */
  async #retry(id: string): Promise<{ redriven?: true; newId?: string }> {
    const record = await this.#record(id);
    if (record.deadLetter !== undefined) {
      const { redriven } = await this.#core.client.redrive(id);
      if (!redriven.includes(id)) throw new HttpError(409, "not_redriven", `Job ${id} was not in the dead-letter queue any more`);
      return { redriven: true };
    }
    if (!RETRYABLE.includes(record.state)) throw new HttpError(409, "not_retryable", `Job ${id} is ${record.state}: only failed or cancelled jobs are retried`);
    if (record.payloadOmitted === true) throw new HttpError(409, "payload_omitted", `Job ${id}'s record does not hold its payload (too large to keep), so it cannot be submitted again`);
    if (record.payloadRedacted === true) {
      throw new HttpError(409, "payload_redacted", `Job ${id}'s record holds its payload as redacted by the store's \`redactPayload\` hook, not as submitted, so it cannot be submitted again: submit it anew`);
    }
    const handle = await this.#core.client.submit({
      type: record.type,
      payload: record.payload,
      maxAttempts: record.maxAttempts,
      timeoutMs: record.timeoutMs,
      startTimeoutMs: record.startTimeoutMs,
      metadata: { ...record.metadata, retryOf: id },
      ...(record.labels === undefined ? {} : { labels: record.labels }),
      ...(record.priority === undefined ? {} : { priority: record.priority }),
    });
    return { newId: handle.id };
  }

  async redrive(ctx: RouteContext): Promise<void> {
    const body = await ctx.body();
    only(body, ["jobIds"]);
    let jobIds: string[] | undefined;
    if (body.jobIds !== undefined) {
      if (!Array.isArray(body.jobIds) || body.jobIds.length === 0 || body.jobIds.length > 1000) throw new HttpError(400, "invalid_argument", "Expected `jobIds` to be an array of 1 to 1000 job ids");
      jobIds = body.jobIds.map((v, i) => checkString(`jobIds[${i}]`, v, 256));
    }
    const result = await this.#act(ctx, { kind: "redrive", ...(jobIds?.length === 1 ? { target: jobIds[0] as string } : {}) }, async () => {
      const redriven: string[] = [];
      const missing: string[] = [];
      if (jobIds === undefined) {
        const r = await this.#core.client.redrive({ all: true });
        redriven.push(...r.redriven);
        missing.push(...r.missing);
      } else {
        for (const id of jobIds) {
          const r = await this.#core.client.redrive(id);
          redriven.push(...r.redriven);
          missing.push(...r.missing);
        }
      }
      return { value: { redriven, missing }, detail: `redriven ${redriven.length}${missing.length > 0 ? `, missing ${missing.length}` : ""}` };
    });
    sendJson(ctx.res, 200, result);
  }

  /** Discards one invalid dead letter (never a job's: those are redriven, or stay as the record says). */
  async discard(ctx: RouteContext): Promise<void> {
    const id = checkString("id", ctx.param, 256);
    const queue = this.#core.options.queue;
    await this.#act(ctx, { kind: "discard", target: id }, async () => {
      if (queue.discardDeadLetters === undefined) throw new HttpError(409, "not_supported", "This queue cannot discard dead letters");
      // Only its size, digest and reason go to the audit log: nothing of the body.
      const letter = await findInvalidDeadLetter(queue, id, { redact: () => undefined, raw: false }, (error) => this.#core.report(error));
      const { discarded } = await queue.discardDeadLetters([id], { limit: DEAD_LETTER_SCAN });
      if (discarded.length === 0) throw new HttpError(404, "not_found", `Dead letter ${id} was gone before it could be discarded`);
      return { value: undefined, detail: `discarded ${letter.body.bytes} bytes (sha256 ${letter.body.sha256}): ${letter.reason.slice(0, 200)}` };
    });
    sendJson(ctx.res, 200, { discarded: id });
  }

  async drain(ctx: RouteContext, action: "drain" | "undrain"): Promise<void> {
    const body = await ctx.body();
    only(body, []);
    const workerId = checkString("workerId", ctx.param, 256);
    const directory = this.#core.directory;
    const result = await this.#act(ctx, { kind: action, target: workerId }, async () => {
      if (directory === undefined) throw new HttpError(409, "no_pool_bus", "The console has no `poolBus`: it cannot reach the orchestrators' pools");
      const { applied, errors } = await directory.command(action, workerId, await ctx.who());
      if (applied.length === 0) {
        if (errors.length > 0) throw new HttpError(409, "refused", errors.join("; "));
        throw new HttpError(404, "not_found", `No orchestrator answered holding worker ${workerId}`);
      }
      return { value: { applied, errors }, detail: `${action}ed in ${applied.length} pool(s)` };
    });
    sendJson(ctx.res, 200, { worker: workerId, ...result });
  }

  /**
   * The ids a bulk action would act on: the filter narrowed to the states the action applies to,
   * less the jobs it would refuse (a retry of a job whose record lacks its own payload), counted
   * in `excluded`.
   * @throws {HttpError} 400 `too_many` past {@link BULK_LIMIT} ids or {@link BULK_SCAN_LIMIT} records read.
   */
  async #bulkIds(action: "cancel" | "retry", filter: ConsoleJobFilter): Promise<{ ids: string[]; excluded: number }> {
    const eligible = action === "cancel" ? UNFINISHED : RETRYABLE;
    const asked = filter.state === undefined ? eligible : eligible.filter((s) => (filter.state as string[]).includes(s));
    const ids: string[] = [];
    let excluded = 0;
    if (asked.length === 0) return { ids, excluded };
    let cursor: string | undefined;
    do {
      const page = await this.#core.store.list({ ...storeFilter(filter), state: [...asked], limit: 1000, ...(cursor === undefined ? {} : { cursor }) });
      for (const record of page.records) {
        if (action === "retry" && !canRetry(record)) excluded++;
        else ids.push(record.id);
      }
      if (ids.length > BULK_LIMIT) throw new HttpError(400, "too_many", `The filter covers more than ${BULK_LIMIT} jobs: narrow it`);
      // Records left out cost a read too: a filter matching millions of them must not be read whole on every click.
      if (ids.length + excluded > BULK_SCAN_LIMIT) throw new HttpError(400, "too_many", `The filter matches more than ${BULK_SCAN_LIMIT} jobs (${excluded} of them cannot be retried): narrow it`);
      cursor = page.nextCursor;
    } while (cursor !== undefined);
    return { ids, excluded };
  }

  #bulkInput(body: Record<string, unknown>): { action: "cancel" | "retry"; filter: ConsoleJobFilter } {
    if (body.action !== "cancel" && body.action !== "retry") throw new HttpError(400, "invalid_argument", 'Expected `action` to be "cancel" or "retry"');
    return { action: body.action, filter: checkConsoleFilter(checkObject("filter", body.filter ?? {})) };
  }

  async bulkPreview(ctx: RouteContext): Promise<void> {
    const body = await ctx.body();
    only(body, ["action", "filter"]);
    const { action, filter } = this.#bulkInput(body);
    const { ids, excluded } = await this.#bulkIds(action, filter);
    sendJson(ctx.res, 200, { action, filter, count: ids.length, sample: ids.slice(0, SAMPLE), excluded } satisfies ConsoleBulkPreview);
  }

  async bulk(ctx: RouteContext): Promise<void> {
    const body = await ctx.body();
    only(body, ["action", "filter", "expectedCount", "reason"]);
    const { action, filter } = this.#bulkInput(body);
    const expectedCount = checkInteger("expectedCount", body.expectedCount, 0, BULK_LIMIT);
    const reason = optional(body.reason, undefined, (v) => checkString("reason", v, 1000));
    await this.#core.authorize(ctx, { kind: "bulk", bulk: { action, filter, count: expectedCount } });
    const { ids } = await this.#bulkIds(action, filter);
    if (ids.length !== expectedCount) {
      const message = `The filter now covers ${ids.length} jobs, not the ${expectedCount} previewed: preview again`;
      await this.#core.audit.write({ who: await ctx.who(), action: "bulk", filter: filter as Record<string, unknown>, count: expectedCount, outcome: "failed", detail: `${action}: ${message}` });
      throw new HttpError(409, "count_changed", message);
    }
    const result = await this.#act(ctx, { kind: "bulk", bulk: { action, filter, count: ids.length } }, async () => {
      const done: string[] = [];
      const failed: Array<{ id: string; error: { code: string; message: string } }> = [];
      for (const id of ids) {
        try {
          if (action === "cancel") await this.#cancel(id, reason);
          else await this.#retry(id);
          done.push(id);
        } catch (error) {
          const e = error instanceof HttpError ? { code: error.code, message: error.message } : { code: OrchestratorError.from(error).code, message: OrchestratorError.from(error).rawMessage };
          failed.push({ id, error: e });
        }
      }
      return { value: { action, done, failed } satisfies ConsoleBulkResult, detail: `${action}: ${done.length} done, ${failed.length} failed` };
    }, reason);
    sendJson(ctx.res, 200, result);
  }

  async saveFilter(ctx: RouteContext): Promise<void> {
    const body = await ctx.body();
    only(body, ["name", "filter"]);
    const name = checkString("name", body.name, 128);
    const filter = checkConsoleFilter(body.filter);
    const saved = await this.#act(ctx, { kind: "filters", target: name }, async () => {
      const entry = { name, filter: filter as Record<string, unknown>, createdAt: Date.now(), createdBy: await ctx.who() };
      await this.#core.audit.records.saveFilter(entry);
      return { value: entry, detail: "saved" };
    });
    sendJson(ctx.res, 200, { filter: saved });
  }

  async deleteFilter(ctx: RouteContext): Promise<void> {
    const name = checkString("name", ctx.param, 128);
    await this.#act(ctx, { kind: "filters", target: name }, async () => {
      if (!(await this.#core.audit.records.deleteFilter(name))) throw new HttpError(404, "not_found", `No saved filter ${name}`);
      return { value: undefined, detail: "deleted" };
    });
    sendJson(ctx.res, 200, { deleted: name });
  }

  async #record(id: string): Promise<JobRecord> {
    if (id === "" || id.length > 256) throw new HttpError(400, "invalid_argument", "Expected a job id of 1 to 256 characters");
    const record = await this.#core.store.get(id);
    if (record === undefined) throw new HttpError(404, "not_found", `No job ${id}`);
    return record;
  }
}
