import { randomUUID } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { JobOutcome } from "../../job/types.ts";
import { rejectionOf } from "../rejection-of.ts";
import type { ConsoleRecords, JobLogLine, JobRecord, JobStore, JobTransition, NewJobRecord } from "../../store/types.ts";

/** One fresh store under test, as {@link describeJobStoreContract}'s factory returns it. */
export interface JobStoreContractSubject {
  /** The store under test; empty, used by this test only. */
  store: JobStore;
  /**
   * Optional: another client of the same store, as a second process would open; the suite then
   * checks that idempotency and fencing hold across the two. Closed by `dispose`.
   */
  connectPeer?(): Promise<JobStore>;
  /** Closes what the factory opened and removes what it created. */
  dispose(): Promise<void>;
}

/** Creates one {@link JobStoreContractSubject} per test; every option given is passed to the store (`retentionMs`, `maxPayloadBytes`, `redactPayload`, `maxLogLines`). */
export type JobStoreContractFactory = (options: { retentionMs?: number; maxPayloadBytes?: number; redactPayload?: (payload: unknown) => unknown; maxLogLines?: number }) => Promise<JobStoreContractSubject>;

/** A new job's record input with a fresh id. */
export function contractRecord(overrides: Partial<NewJobRecord> = {}): NewJobRecord {
  return { id: randomUUID(), type: "contract", payload: { n: 1 }, maxAttempts: 3, timeoutMs: 60_000, startTimeoutMs: 60_000, ...overrides };
}

/**
 * The behaviour every {@link JobStore} must have, as a vitest suite: creation and idempotency
 * (atomic across two clients when the factory offers `connectPeer`), fenced transitions, the
 * attempt history across retries and redrives, filters and cursor pages, counts, start timeouts
 * and retention; and, for a store with the optional `takeTokens` / `stickyWorker`, shared rate-limit
 * buckets and sticky keys (skipped without them). Run it against your own store:
 *
 * @example
 * ```ts
 * describeJobStoreContract("MyStore", async (options) => {
 *   const store = new MyStore(options);
 *   return { store, dispose: () => store.close() };
 * });
 * ```
 */
export function describeJobStoreContract(name: string, factory: JobStoreContractFactory): void {
  describe(`JobStore contract: ${name}`, () => {
    let subject: JobStoreContractSubject;
    let store: JobStore;
    const open = async (options: Parameters<JobStoreContractFactory>[0] = {}) => {
      subject = await factory(options);
      store = subject.store;
    };
    beforeEach(() => open());
    afterEach(() => subject.dispose());

    const started = (jobId: string, attempt: number, token = attempt, workerId = "w1"): JobTransition => ({
      kind: "started", jobId, attempt, fencingToken: token, workerId, dispatcherId: "d1", at: Date.now(),
    });
    const finished = (jobId: string, attempt: number, result: unknown, token = attempt): JobTransition => ({
      kind: "finished", jobId, attempt, fencingToken: token, outcome: { status: "completed", result }, started: true, at: Date.now(),
    });
    const failedForGood = (jobId: string, attempt: number, token = attempt): JobTransition => ({
      kind: "finished", jobId, attempt, fencingToken: token, started: true, at: Date.now(), deadLetter: "handler_failed: boom (attempt 1 of 1)",
      outcome: { status: "failed", error: { code: "handler_failed", message: "boom", retryable: false } },
    });

    it("creates a queued record with everything submitted, and get() returns a copy", async () => {
      const input = contractRecord({ metadata: { tenant: "a" }, idempotencyKey: `k-${randomUUID()}`, labels: { arch: "arm64" } });
      const { created, record } = await store.create(input);
      expect(created).toBe(true);
      expect(record).toMatchObject({ id: input.id, type: "contract", state: "queued", payload: { n: 1 }, metadata: { tenant: "a" }, attempts: [], redrives: 0 });
      expect(record.idempotencyKey).toBe(input.idempotencyKey);
      expect(record.startBy).toBe(record.createdAt + 60_000);
      const got = await store.get(input.id);
      expect(got).toEqual(record);
      (got as JobRecord).metadata.tenant = "changed";
      expect((await store.get(input.id))?.metadata.tenant).toBe("a");
      expect(await store.get(`missing-${randomUUID()}`)).toBeUndefined();
      expect(await store.getByIdempotencyKey(input.idempotencyKey as string)).toEqual(record);
    });

    it("returns the existing job for a known idempotency key or id, creating nothing", async () => {
      const key = `k-${randomUUID()}`;
      const first = await store.create(contractRecord({ idempotencyKey: key }));
      const second = await store.create(contractRecord({ idempotencyKey: key, payload: { n: 2 } }));
      expect(second.created).toBe(false);
      expect(second.record.id).toBe(first.record.id);
      expect(second.record.payload).toEqual({ n: 1 });
      const sameId = await store.create(contractRecord({ id: first.record.id }));
      expect(sameId).toMatchObject({ created: false, record: { id: first.record.id } });
    });

    it("creates one job for one idempotency key under concurrent creates, across clients", async () => {
      const peer = subject.connectPeer ? await subject.connectPeer() : store;
      const key = `k-${randomUUID()}`;
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? store : peer).create(contractRecord({ idempotencyKey: key }))),
      );
      expect(results.filter((r) => r.created)).toHaveLength(1);
      expect(new Set(results.map((r) => r.record.id)).size).toBe(1);
      expect((await store.list({ metadata: {}, idPrefix: results[0]?.record.id })).records).toHaveLength(1);
    });

    it("bounds the payload it keeps and applies the redaction hook", async () => {
      await subject.dispose();
      await open({ maxPayloadBytes: 64, redactPayload: (payload) => ({ ...(payload as object), secret: "***" }) });
      const small = await store.create(contractRecord({ payload: { secret: "hunter2" } }));
      expect(small.record.payload).toEqual({ secret: "***" });
      expect(small.record.payloadRedacted).toBe(true);
      expect((await store.get(small.record.id))?.payloadRedacted).toBe(true);
      // A payload the hook leaves as it was is the job's own: not marked.
      const untouched = await store.create(contractRecord({ payload: { secret: "***" } }));
      expect(untouched.record.payloadRedacted).toBeUndefined();
      const big = await store.create(contractRecord({ payload: { blob: "x".repeat(100) } }));
      expect(big.record.payloadOmitted).toBe(true);
      expect(big.record.payload).toBeUndefined();
      expect((await store.get(big.record.id))?.payloadOmitted).toBe(true);
    });

    it("records an attempt's life: started, progress, retrying, started again, completed", async () => {
      const { record } = await store.create(contractRecord());
      const id = record.id;
      expect((await store.record(started(id, 1))).status).toBe("applied");
      expect((await store.get(id))?.state).toBe("running");
      expect((await store.get(id))?.startBy).toBeUndefined();
      await store.record({ kind: "progress", jobId: id, attempt: 1, fencingToken: 1, progress: 0.5, message: "half", at: Date.now() });
      expect((await store.get(id))?.progress).toMatchObject({ progress: 0.5, message: "half", attempt: 1 });
      const error = { code: "handler_failed" as const, message: "flaky", retryable: true };
      await store.record({ kind: "retrying", jobId: id, attempt: 1, fencingToken: 1, error, workerId: "w1", at: Date.now() });
      expect((await store.get(id))?.state).toBe("retrying");
      await store.record(started(id, 2, 2, "w2"));
      expect((await store.record(finished(id, 2, { ok: true }))).status).toBe("applied");
      const done = await store.get(id);
      expect(done).toMatchObject({ state: "completed", result: { ok: true }, fencingToken: 2 });
      expect(done?.finishedAt).toBeGreaterThan(0);
      expect(done?.attempts).toMatchObject([
        { number: 1, round: 0, workerId: "w1", dispatcherId: "d1", outcome: "retrying", error },
        { number: 2, round: 0, workerId: "w2", outcome: "completed" },
      ]);
      expect(done?.attempts[0]?.startedAt).toBeGreaterThan(0);
      expect(done?.attempts[0]?.endedAt).toBeGreaterThan(0);
    });

    it("marks an attempt that never ended as lost when a later one starts", async () => {
      const { record } = await store.create(contractRecord());
      await store.record(started(record.id, 1));
      await store.record(started(record.id, 2));
      expect((await store.get(record.id))?.attempts.map((a) => a.outcome)).toEqual(["lost", undefined]);
    });

    it("refuses a transition with a lower fencing token than recorded (a stale attempt never overwrites a newer one)", async () => {
      const { record } = await store.create(contractRecord());
      const id = record.id;
      await store.record(started(id, 1, 1));
      await store.record(started(id, 2, 2, "w2"));
      const stale = await store.record(finished(id, 1, "stale result", 1));
      expect(stale.status).toBe("stale");
      expect(stale.record).toMatchObject({ state: "running", fencingToken: 2 });
      await store.record(finished(id, 2, "fresh result", 2));
      const late = await store.record(started(id, 1, 1));
      expect(late.status).toBe("stale");
      expect(await store.get(id)).toMatchObject({ state: "completed", result: "fresh result" });
    });

    it("keeps stale writes out under concurrent writers from two clients", async () => {
      const peer = subject.connectPeer ? await subject.connectPeer() : store;
      const { record } = await store.create(contractRecord());
      const id = record.id;
      const writes: Promise<unknown>[] = [];
      for (let token = 1; token <= 20; token++) {
        const writer = token % 2 === 0 ? store : peer;
        writes.push(writer.record({ kind: "progress", jobId: id, attempt: token, fencingToken: token, progress: token / 20, at: Date.now() }));
      }
      await Promise.all(writes);
      const after = await store.get(id);
      expect(after?.fencingToken).toBe(20);
      expect(after?.progress?.attempt).toBe(20);
      expect((await peer.record({ kind: "progress", jobId: id, attempt: 3, fencingToken: 3, progress: 0, at: Date.now() })).status).toBe("stale");
    });

    it("starts a job from one copy only when starts name their copy, across two clients racing", async () => {
      const peer = subject.connectPeer ? await subject.connectPeer() : store;
      const { record } = await store.create(contractRecord());
      const start = (copy: string, workerId: string, attempt = 1): JobTransition => ({
        kind: "started", jobId: record.id, attempt, fencingToken: attempt, workerId, dispatcherId: `d-${workerId}`, at: Date.now(), copy,
      });
      // Three copies of one job on the queue, started at once by three dispatchers: one runs.
      const results = await Promise.all([store.record(start("a", "w1")), peer.record(start("b", "w2")), store.record(start("c", "w3"))]);
      expect(results.filter((r) => r.status === "applied")).toHaveLength(1);
      expect(results.filter((r) => r.status === "stale")).toHaveLength(2);
      const winner = (await store.get(record.id))?.attempts[0]?.copy as string;
      const loser = ["a", "b", "c"].find((c) => c !== winner) as string;
      // The winning copy starts again as usual: put back unstarted and taken elsewhere, or redelivered.
      expect((await peer.record(start(winner, "w4"))).status).toBe("applied");
      expect((await store.record(start(winner, "w5", 2))).status).toBe("applied");
      // Another copy never does, whatever its attempt.
      expect((await peer.record(start(loser, "w6", 3))).status).toBe("stale");
      expect((await store.get(record.id))?.attempts.map((a) => [a.number, a.copy, a.workerId])).toEqual([[1, winner, "w4"], [2, winner, "w5"]]);
    });

    it("keeps the schedule a job was fired by, and lists a schedule's jobs", async () => {
      const scheduleId = `s-${randomUUID()}`;
      const { record } = await store.create(contractRecord({ id: `schedule:${scheduleId}:1000`, schedule: { id: scheduleId, tick: 1000 } }));
      expect(record.schedule).toEqual({ id: scheduleId, tick: 1000 });
      await store.create(contractRecord({ id: `schedule:${scheduleId}:2000`, schedule: { id: scheduleId, tick: 2000 } }));
      await store.create(contractRecord({ id: `schedule:${scheduleId}x:1000`, schedule: { id: `${scheduleId}x`, tick: 1000 } }));
      await store.create(contractRecord({ id: `schedule:${scheduleId}:3000` }));
      const page = await store.list({ schedule: scheduleId });
      expect(page.records.map((r) => r.schedule?.tick).sort()).toEqual([1000, 2000]);
      expect(await rejectionOf(store.create(contractRecord({ schedule: { id: scheduleId, tick: -1 } })))).toMatchObject({
        code: "invalid_argument", details: { field: "job.schedule.tick" },
      });
    });

    it("keeps a final record final: only a redrive of a dead-lettered job leaves it", async () => {
      const { record } = await store.create(contractRecord());
      await store.record(started(record.id, 1));
      await store.record(finished(record.id, 1, 42));
      const again = await store.record(started(record.id, 2));
      expect(again.status).toBe("finished");
      expect(again.record).toMatchObject({ state: "completed", result: 42 });
      expect((await store.record({ kind: "redriven", jobId: record.id, fencingToken: 5, at: Date.now() })).status).toBe("finished");
      expect((await store.get(record.id))?.state).toBe("completed");
    });

    it("redrives a dead-lettered job: queued again, a fresh round of attempts, its history and a higher token kept", async () => {
      const { record } = await store.create(contractRecord({ maxAttempts: 1 }));
      const id = record.id;
      await store.record(started(id, 1, 1));
      await store.record(failedForGood(id, 1, 1));
      const dead = await store.get(id);
      expect(dead).toMatchObject({ state: "failed", deadLetter: { reason: "handler_failed: boom (attempt 1 of 1)" }, error: { code: "handler_failed" } });
      expect((await store.list({ deadLettered: true, idPrefix: id })).records.map((r) => r.id)).toEqual([id]);
      expect((await store.record({ kind: "redriven", jobId: id, fencingToken: 0, at: Date.now() })).status).toBe("stale");
      expect((await store.record({ kind: "redriven", jobId: id, fencingToken: 1001, at: Date.now() })).status).toBe("applied");
      const redriven = await store.get(id);
      expect(redriven).toMatchObject({ state: "queued", redrives: 1, fencingToken: 1001 });
      expect(redriven?.deadLetter).toBeUndefined();
      expect(redriven?.startBy).toBeGreaterThan(0);
      expect((await store.list({ deadLettered: true, idPrefix: id })).records).toEqual([]);
      await store.record(started(id, 1, 1002));
      await store.record(finished(id, 1, "second life", 1002));
      expect((await store.get(id))?.attempts).toMatchObject([
        { number: 1, round: 0, outcome: "failed" },
        { number: 1, round: 1, outcome: "completed", fencingToken: 1002 },
      ]);
      expect((await store.record(finished(id, 1, "first life again", 1))).status).toBe("stale");
    });

    it("records unschedulable with its reason and back to queued", async () => {
      const { record } = await store.create(contractRecord());
      await store.record({ kind: "unschedulable", jobId: record.id, fencingToken: 1, reason: "no worker serves job type `contract`", at: Date.now() });
      expect(await store.get(record.id)).toMatchObject({ state: "unschedulable", reason: "no worker serves job type `contract`" });
      await store.record({ kind: "queued", jobId: record.id, fencingToken: 1, at: Date.now() });
      const back = await store.get(record.id);
      expect(back?.state).toBe("queued");
      expect(back?.reason).toBeUndefined();
    });

    it("fails the jobs that did not start within their start timeout, and only those", async () => {
      const now = Date.now();
      const late = await store.create(contractRecord({ startTimeoutMs: 1000, createdAt: now - 5000 }));
      await store.record({ kind: "unschedulable", jobId: late.record.id, fencingToken: 1, reason: "no healthy worker with labels {arch: arm64}", at: now });
      const lateStarted = await store.create(contractRecord({ startTimeoutMs: 1000, createdAt: now - 5000 }));
      await store.record(started(lateStarted.record.id, 1));
      const young = await store.create(contractRecord({ startTimeoutMs: 60_000 }));
      const expired = await store.expireUnstarted({ now });
      expect(expired.map((r) => r.id)).toEqual([late.record.id]);
      const failed = await store.get(late.record.id);
      expect(failed).toMatchObject({ state: "failed", error: { code: "deadline_exceeded", details: { reason: "start_timeout", unschedulable: "no healthy worker with labels {arch: arm64}" } } });
      expect(failed?.error?.message).toContain("start timeout of 1000 ms");
      expect((await store.get(lateStarted.record.id))?.state).toBe("running");
      expect((await store.get(young.record.id))?.state).toBe("queued");
      expect(await store.expireUnstarted({ now })).toEqual([]);
      expect((await store.record(started(late.record.id, 1))).status).toBe("finished");
      // The dispatcher that later takes its message dead-letters it: the record takes the mark only.
      expect((await store.record(failedForGood(late.record.id, 1))).status).toBe("applied");
      expect(await store.get(late.record.id)).toMatchObject({ state: "failed", error: { code: "deadline_exceeded" }, deadLetter: { reason: "handler_failed: boom (attempt 1 of 1)" } });
    });

    it("keeps a job due later as scheduled with its due time, counts its start timeout from then, and moves it on", async () => {
      const now = Date.now();
      const due = await store.create(contractRecord({ startTimeoutMs: 1000, createdAt: now - 5000, runAt: now + 60_000 }));
      expect(due.record).toMatchObject({ state: "scheduled", runAt: now + 60_000, startBy: now + 61_000 });
      await store.create(contractRecord({ runAt: now + 60_000 }));
      const past = await store.create(contractRecord({ createdAt: now, runAt: now - 1 }));
      expect(past.record.state).toBe("queued");
      expect(await store.counts({ type: "contract" })).toMatchObject({ scheduled: 2 });
      expect((await store.list({ state: "scheduled", idPrefix: due.record.id })).records.map((r) => r.id)).toEqual([due.record.id]);
      // Not started by its due time plus its start timeout: failed, like any job that never started.
      expect((await store.expireUnstarted({ now: now + 60_999 })).map((r) => r.id)).not.toContain(due.record.id);
      const expired = await store.expireUnstarted({ now: now + 61_000 });
      expect(expired.map((r) => r.id)).toEqual([due.record.id]);
      expect(await store.get(due.record.id)).toMatchObject({ state: "failed", error: { code: "deadline_exceeded" } });

      // Cancelled while it waits (token 0: no attempt ever ran), it never goes on.
      const waiting = await store.create(contractRecord({ runAt: Date.now() + 60_000 }));
      const cancel: JobTransition = { kind: "finished", jobId: waiting.record.id, attempt: 1, fencingToken: 0, started: false, at: Date.now(), outcome: { status: "cancelled", reason: "requested" } };
      expect((await store.record(cancel)).status).toBe("applied");
      expect((await store.record({ kind: "queued", jobId: waiting.record.id, fencingToken: 1, at: Date.now() })).status).toBe("finished");
      expect(await store.get(waiting.record.id)).toMatchObject({ state: "cancelled", runAt: waiting.record.runAt });

      // Due: a dispatcher holds it (queued), then it runs.
      const moving = await store.create(contractRecord({ runAt: Date.now() + 60_000 }));
      expect((await store.record({ kind: "queued", jobId: moving.record.id, fencingToken: 1, at: Date.now() })).status).toBe("applied");
      expect((await store.get(moving.record.id))?.state).toBe("queued");
      await store.record(started(moving.record.id, 1));
      expect(await store.get(moving.record.id)).toMatchObject({ state: "running", runAt: moving.record.runAt });
      // A cancel recorded by a producer (token 0) after a dispatcher took the job is stale: the dispatcher decides.
      expect((await store.record({ ...cancel, jobId: moving.record.id })).status).toBe("stale");
    });

    it("lists with every filter, newest first, one page at a time", async () => {
      const prefix = `p-${randomUUID().slice(0, 8)}-`;
      const base = Date.now() - 100_000;
      for (let i = 0; i < 7; i++) {
        await store.create(contractRecord({ id: `${prefix}${i}`, type: i % 2 === 0 ? "even" : "odd", createdAt: base + i * 10, metadata: { tenant: i < 4 ? "a" : "b", i: String(i) } }));
      }
      await store.create(contractRecord({ id: `other-${randomUUID()}`, createdAt: base + 3 }));
      await store.record(started(`${prefix}1`, 1));
      const ids = (page: { records: JobRecord[] }) => page.records.map((r) => r.id.slice(prefix.length));
      expect(ids(await store.list({ idPrefix: prefix }))).toEqual(["6", "5", "4", "3", "2", "1", "0"]);
      expect(ids(await store.list({ idPrefix: prefix, type: "even" }))).toEqual(["6", "4", "2", "0"]);
      expect(ids(await store.list({ idPrefix: prefix, state: "running" }))).toEqual(["1"]);
      expect(ids(await store.list({ idPrefix: prefix, state: ["running", "queued"], type: "odd" }))).toEqual(["5", "3", "1"]);
      expect(ids(await store.list({ idPrefix: prefix, metadata: { tenant: "a" } }))).toEqual(["3", "2", "1", "0"]);
      expect(ids(await store.list({ idPrefix: prefix, metadata: { tenant: "b", i: "5" } }))).toEqual(["5"]);
      expect(ids(await store.list({ idPrefix: prefix, createdAfter: base + 20, createdBefore: base + 50 }))).toEqual(["4", "3", "2"]);
      const seen: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const page = await store.list({ idPrefix: prefix, limit: 3, ...(cursor === undefined ? {} : { cursor }) });
        seen.push(...ids(page));
        cursor = page.nextCursor;
        pages++;
      } while (cursor !== undefined);
      expect(seen).toEqual(["6", "5", "4", "3", "2", "1", "0"]);
      expect(pages).toBe(3);
      expect(ids(await store.list({ idPrefix: `${prefix}%` }))).toEqual([]);
    });

    it("searches the id, type, metadata values and payload text, case-insensitively, with the other filters", async () => {
      const prefix = `s-${randomUUID().slice(0, 8)}-`;
      await store.create(contractRecord({ id: `${prefix}0`, type: "deploy", payload: { repo: "Acme/Widget", tag: 42 } }));
      await store.create(contractRecord({ id: `${prefix}1`, type: "build", payload: { note: "100% <script>x</script>" }, metadata: { team: "Payments" } }));
      await store.create(contractRecord({ id: `${prefix}2`, type: "build", payload: ["nested", { deep: ["needle_in_array"] }] }));
      const ids = async (search: string, extra: Record<string, unknown> = {}) =>
        (await store.list({ idPrefix: prefix, search, ...extra })).records.map((r) => r.id.slice(prefix.length)).sort();
      expect(await ids("acme/w")).toEqual(["0"]);
      expect(await ids("42")).toEqual(["0"]);
      expect(await ids("payments")).toEqual(["1"]);
      expect(await ids("<SCRIPT>")).toEqual(["1"]);
      expect(await ids("100%")).toEqual(["1"]);
      expect(await ids("e_in_a")).toEqual(["2"]);
      expect(await ids("x_in_a")).toEqual([]); // `_` is no LIKE wildcard either
      expect(await ids("BUILD")).toEqual(["1", "2"]);
      expect(await ids("build", { type: "deploy" })).toEqual([]);
      expect(await ids(`${prefix}1`)).toEqual(["1"]);
      expect(await ids("%")).toEqual(["1"]); // a LIKE wildcard is searched as text
      expect(await ids("nothing-like-this")).toEqual([]);
    });

    it("keeps the trace id given at create", async () => {
      const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
      const { record } = await store.create(contractRecord({ traceId }));
      expect(record.traceId).toBe(traceId);
      expect((await store.get(record.id))?.traceId).toBe(traceId);
      expect((await rejectionOf(store.create(contractRecord({ traceId: "nope" })))).code).toBe("invalid_argument");
    });

    it("keeps console records when it has them: an audit log newest first, saved filters by name", async () => {
      const records = store as Partial<ConsoleRecords>;
      if (typeof records.appendAudit !== "function") return; // an optional part of a store
      const console = store as unknown as ConsoleRecords;
      const base = Date.now();
      const who = `op-${randomUUID().slice(0, 8)}`;
      for (let i = 0; i < 5; i++) {
        await console.appendAudit({ id: `${who}-${i}`, at: base + i, who, action: i % 2 === 0 ? "cancel" : "bulk", target: `job-${i}`, outcome: i === 4 ? "denied" : "ok", ...(i % 2 === 1 ? { filter: { state: ["failed"] }, count: i } : {}) });
      }
      const mine = (await console.listAudit({ limit: 1000 })).filter((e) => e.who === who);
      expect(mine.map((e) => e.id)).toEqual([4, 3, 2, 1, 0].map((i) => `${who}-${i}`));
      expect(mine[1]).toEqual({ id: `${who}-3`, at: base + 3, who, action: "bulk", target: "job-3", outcome: "ok", filter: { state: ["failed"] }, count: 3 });
      const page = await console.listAudit({ limit: 2, before: base + 3 });
      expect(page.map((e) => e.id)).toEqual([`${who}-2`, `${who}-1`]);
      expect((await rejectionOf(console.appendAudit({ id: "x", at: 1, who, action: "cancel", outcome: "maybe" as never }))).code).toBe("invalid_argument");
      const name = `f-${randomUUID().slice(0, 8)}`;
      await console.saveFilter({ name, filter: { state: ["failed"] }, createdAt: base, createdBy: who });
      await console.saveFilter({ name, filter: { type: "build" }, createdAt: base + 1, createdBy: who });
      expect((await console.listFilters()).filter((f) => f.name === name)).toEqual([{ name, filter: { type: "build" }, createdAt: base + 1, createdBy: who }]);
      expect(await console.deleteFilter(name)).toBe(true);
      expect(await console.deleteFilter(name)).toBe(false);
      expect((await console.listFilters()).filter((f) => f.name === name)).toEqual([]);
    });

    it("counts records by state, every state present", async () => {
      const type = `count-${randomUUID()}`;
      const a = await store.create(contractRecord({ type }));
      await store.create(contractRecord({ type }));
      await store.record(started(a.record.id, 1));
      expect(await store.counts({ type })).toEqual({ scheduled: 0, queued: 1, unschedulable: 0, running: 1, retrying: 0, completed: 0, failed: 0, cancelled: 0 });
    });

    it("removes finished records past the retention, in batches, and nothing else", async () => {
      await subject.dispose();
      await open({ retentionMs: 0 });
      const prefix = `r-${randomUUID().slice(0, 8)}-`;
      for (let i = 0; i < 5; i++) {
        const { record } = await store.create(contractRecord({ id: `${prefix}${i}` }));
        if (i < 4) await store.record(finished(record.id, 1, i));
      }
      const removed = await store.cleanup({ before: Date.now() + 1, batchSize: 2 });
      expect(removed).toBeGreaterThanOrEqual(4);
      expect((await store.list({ idPrefix: prefix })).records.map((r) => r.id)).toEqual([`${prefix}4`]);
    });

    it("keeps (when implemented) the latest maxLogLines log lines of a job, in order, once each, and removes them with it", async (context) => {
      if (!store.appendLogs || !store.logs) return context.skip();
      await subject.dispose();
      await open({ retentionMs: 0, maxLogLines: 4 });
      const append = store.appendLogs.bind(store);
      const { record } = await store.create(contractRecord());
      const line = (token: number, seq: number, text = `run ${token} line ${seq}`): JobLogLine => ({ at: Date.now(), attempt: token, fencingToken: token, seq, line: text });
      await append(record.id, [line(1, 0), line(1, 1, "x".repeat(5000))]);
      // The same batch written again (a retried write) adds nothing; a later run's lines come after.
      await append(record.id, [line(1, 0), line(1, 1, "x".repeat(5000))]);
      await append(record.id, [{ ...line(2, 0), stream: "stderr" }]);
      const kept = await store.logs(record.id);
      expect(kept.map((l) => [l.fencingToken, l.seq])).toEqual([[1, 0], [1, 1], [2, 0]]);
      expect(kept[1]?.line).toHaveLength(4000);
      expect(kept[2]).toMatchObject({ stream: "stderr", attempt: 2 });
      await append(record.id, [line(2, 2), line(2, 1)]);
      expect((await store.logs(record.id)).map((l) => [l.fencingToken, l.seq])).toEqual([[1, 1], [2, 0], [2, 1], [2, 2]]);
      // Lines of a job the store has no record of are dropped.
      await append("no-such-job", [line(1, 0)]);
      expect(await store.logs("no-such-job")).toEqual([]);
      expect((await rejectionOf(append(record.id, [{ ...line(1, 3), seq: -1 }]))).code).toBe("invalid_argument");
      expect((await rejectionOf(append(record.id, "line" as never))).code).toBe("invalid_argument");
      await store.record(finished(record.id, 2, "done", 2));
      await store.cleanup({ before: Date.now() + 1 });
      expect(await store.logs(record.id)).toEqual([]);
    });

    it("sums up (when implemented) what finished lately: per bucket and final state, and run-time percentiles of the newest sampleLimit", async (context) => {
      if (!store.finishedSummary) return context.skip();
      const base = Math.floor(Date.now() / 60_000) * 60_000 - 120_000;
      const job = async () => (await store.create(contractRecord({ createdAt: base }))).record.id;
      const run = async (id: string, startAt: number, endAt: number, outcome: JobOutcome) => {
        await store.record({ kind: "started", jobId: id, attempt: 1, fencingToken: 1, workerId: "w1", at: startAt });
        await store.record({ kind: "finished", jobId: id, attempt: 1, fencingToken: 1, started: true, at: endAt, outcome });
      };
      await run(await job(), base + 1000, base + 1500, { status: "completed", result: 1 });
      await run(await job(), base + 2000, base + 12_000, { status: "failed", error: { code: "handler_failed", message: "boom", retryable: false } });
      await store.record({ kind: "finished", jobId: await job(), attempt: 1, fencingToken: 0, started: false, at: base + 13_000, outcome: { status: "cancelled", reason: "requested" } });
      await run(await job(), base - 60_000, base - 59_000, { status: "completed", result: 0 }); // before the window
      await job(); // not finished
      expect(await store.finishedSummary({ since: base, bucketMs: 10_000 })).toEqual({
        buckets: [{ t: base, completed: 1, failed: 0, cancelled: 0 }, { t: base + 10_000, completed: 0, failed: 1, cancelled: 1 }],
        runTime: { p50Ms: 500, p95Ms: 10_000, count: 2 },
        // Created at `base`, started 1 s and 2 s later; the cancelled one never started.
        waitTime: { p50Ms: 1000, p95Ms: 2000, count: 2 },
        capped: false,
      });
      // The times come from the newest `sampleLimit` finished (the cancelled one at +13 s, then the failed one); the buckets count all.
      const newest = await store.finishedSummary({ since: base, bucketMs: 10_000, sampleLimit: 2 });
      expect(newest).toMatchObject({ runTime: { p50Ms: 10_000, p95Ms: 10_000, count: 1 }, waitTime: { p50Ms: 2000, p95Ms: 2000, count: 1 }, capped: true });
      expect(newest.buckets).toHaveLength(2);
      expect(await store.finishedSummary({ since: base, bucketMs: 10_000, sampleLimit: 3 })).toMatchObject({ runTime: { count: 2 }, capped: false });
      const later = await store.finishedSummary({ since: base, bucketMs: 10_000, runTimeSince: base + 10_000 });
      expect(later.runTime).toEqual({ p50Ms: 10_000, p95Ms: 10_000, count: 1 });
      expect(later.waitTime).toEqual({ p50Ms: 2000, p95Ms: 2000, count: 1 });
      const none = { p50Ms: null, p95Ms: null, count: 0 };
      expect(await store.finishedSummary({ since: base + 60_000, bucketMs: 10_000 })).toEqual({ buckets: [], runTime: none, waitTime: none, capped: false });
      expect((await rejectionOf(store.finishedSummary({ since: base, bucketMs: 10 }))).code).toBe("invalid_argument");
      expect((await rejectionOf(store.finishedSummary({ since: base, bucketMs: 10_000, sampleLimit: 0 }))).code).toBe("invalid_argument");
    });

    it("rejects bad input with invalid_argument naming the field", async () => {
      const bad = async (promise: Promise<unknown>, field: string) => {
        const error = await rejectionOf(promise);
        expect(error.code).toBe("invalid_argument");
        expect(error.message).toContain(field);
      };
      await bad(store.create({ ...contractRecord(), type: "" }), "job.type");
      await bad(store.create({ ...contractRecord(), maxAttempts: 0 }), "job.maxAttempts");
      await bad(store.record({ kind: "started", jobId: "x", attempt: 1, fencingToken: -1, workerId: "w", at: 1 }), "fencingToken");
      await bad(store.list({ limit: 0 }), "limit");
      await bad(store.list({ cursor: "nonsense" }), "cursor");
      await bad(store.list({ state: "sleeping" as never }), "state");
      expect((await store.record(started(`missing-${randomUUID()}`, 1))).status).toBe("not_found");
    });

    it("takes rate-limit tokens atomically across clients: a full bucket grants its burst, then says how long to wait (stores with takeTokens)", async (ctx) => {
      if (store.takeTokens === undefined) return ctx.skip();
      const peer = subject.connectPeer ? await subject.connectPeer() : store;
      const key = `contract:${randomUUID()}`;
      const limit = { max: 1, intervalMs: 60_000, burst: 5 };
      const takes = await Promise.all(Array.from({ length: 12 }, (_, i) => ((i % 2 === 0 ? store : peer).takeTokens as NonNullable<JobStore["takeTokens"]>)(key, limit, 1)));
      expect(takes.filter((take) => take.granted)).toHaveLength(5);
      for (const take of takes.filter((t) => !t.granted)) {
        expect(take.waitMs).toBeGreaterThan(50_000);
        expect(take.waitMs).toBeLessThanOrEqual(60_000);
      }
      // A token given back is granted again, once.
      expect(await store.takeTokens(key, limit, -1)).toEqual({ granted: true, waitMs: 0 });
      expect((await peer.takeTokens?.(key, limit, 1))?.granted).toBe(true);
      expect((await store.takeTokens(key, limit, 1)).granted).toBe(false);
      // Buckets are apart by key, and a fast one refills.
      const fast = { max: 1000, intervalMs: 1000, burst: 1 };
      const other = `contract:${randomUUID()}`;
      expect((await store.takeTokens(other, fast, 1)).granted).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect((await store.takeTokens(other, fast, 1)).granted).toBe(true);
      expect((await rejectionOf(store.takeTokens(other, { max: 0, intervalMs: 1, burst: 1 }, 1))).code).toBe("invalid_argument");
    });

    it("remembers the worker of each sticky key for every client, and forgets it past the retention (stores with stickyWorker)", async (ctx) => {
      if (store.stickyWorker === undefined || store.rememberSticky === undefined) return ctx.skip();
      const peer = subject.connectPeer ? await subject.connectPeer() : store;
      const key = `contract:${randomUUID()}`;
      expect(await store.stickyWorker(key)).toBeUndefined();
      await store.rememberSticky(key, "w1");
      expect(await peer.stickyWorker?.(key)).toBe("w1");
      await peer.rememberSticky?.(key, "w2");
      expect(await store.stickyWorker(key)).toBe("w2");
      await store.cleanup({ before: Date.now() + 1 });
      expect(await store.stickyWorker(key)).toBeUndefined();
    });

    it("rejects with queue_closed after close()", async () => {
      await store.close();
      expect((await rejectionOf(store.get("x"))).code).toBe("queue_closed");
      expect((await rejectionOf(store.create(contractRecord()))).code).toBe("queue_closed");
    });
  });
}
