import { randomUUID } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { rejectionOf } from "../rejection-of.ts";
import type { ScheduleRecord, ScheduleStore } from "../../schedule/types.ts";

/** One fresh store under test, as {@link describeScheduleStoreContract}'s factory returns it. */
export interface ScheduleStoreContractSubject {
  /** The store under test; empty, used by this test only. */
  store: ScheduleStore;
  /**
   * Optional: another client of the same store, as a second process would open; the suite then
   * checks that create and compare-and-set hold across the two. Closed by `dispose`.
   */
  connectPeer?(): Promise<ScheduleStore>;
  /** Closes what the factory opened and removes what it created. */
  dispose(): Promise<void>;
}

/** Creates one {@link ScheduleStoreContractSubject} per test. */
export type ScheduleStoreContractFactory = () => Promise<ScheduleStoreContractSubject>;

/** A schedule record with a fresh id, ticking every minute, due at `nextTick`. */
export function contractSchedule(overrides: Partial<ScheduleRecord> = {}): ScheduleRecord {
  const now = Date.now();
  return {
    id: `contract-${randomUUID()}`,
    timing: { everyMs: 60_000 },
    job: { type: "contract", payload: { n: 1 }, maxAttempts: 3, timeoutMs: 60_000, metadata: { team: "a" } },
    overlap: "skip",
    missedTicks: "skip",
    catchupWindowMs: 60_000,
    paused: false,
    cursor: now,
    nextTick: now + 60_000,
    pending: [],
    fired: 0,
    skipped: 0,
    revision: 1,
    createdAt: now,
    updatedAt: now,
    ...overrides,
  };
}

/**
 * The behaviour every {@link ScheduleStore} must have, as a vitest suite: create-if-absent
 * (atomic across two clients when the factory offers `connectPeer`), compare-and-set on
 * `revision`, copies in and out, pages and the `dueBefore` filter, deletes, input checks and
 * close. Run it against your own store:
 *
 * @example
 * ```ts
 * describeScheduleStoreContract("MyScheduleStore", async () => {
 *   const store = new MyScheduleStore();
 *   return { store, dispose: () => store.close() };
 * });
 * ```
 */
export function describeScheduleStoreContract(name: string, factory: ScheduleStoreContractFactory): void {
  describe(`ScheduleStore contract: ${name}`, () => {
    let subject: ScheduleStoreContractSubject;
    let store: ScheduleStore;
    beforeEach(async () => {
      subject = await factory();
      store = subject.store;
    });
    afterEach(() => subject.dispose());

    it("keeps every field of a record and hands out copies", async () => {
      const record = contractSchedule({
        timing: { cron: "0 2 * * *", timezone: "Europe/Berlin", startAt: 1_000, endAt: 4_000_000_000_000 },
        pending: [{ tick: 5_000, cancels: "schedule:x:1000" }], lastTick: 4_000, lastJobId: "schedule:x:4000", fired: 3, skipped: 2, paused: true,
      });
      const { created, record: stored } = await store.create(record);
      expect(created).toBe(true);
      expect(stored).toEqual(record);
      stored.job.payload = "changed";
      const read = await store.get(record.id);
      expect(read).toEqual(record);
      (read as ScheduleRecord).pending.push({ tick: 1 });
      expect(await store.get(record.id)).toEqual(record);
    });

    it("creates once: a second create of an id returns the stored record", async () => {
      const record = contractSchedule();
      await store.create(record);
      const again = await store.create({ ...record, paused: true, revision: 7 });
      expect(again.created).toBe(false);
      expect(again.record).toEqual(record);
    });

    it("creates once across two clients racing on one id", async () => {
      const peer = subject.connectPeer === undefined ? store : await subject.connectPeer();
      const record = contractSchedule();
      const results = await Promise.all([store.create(record), peer.create({ ...record, paused: true }), store.create(record), peer.create(record)]);
      expect(results.filter((r) => r.created)).toHaveLength(1);
      const winner = results.find((r) => r.created)?.record;
      for (const r of results) expect(r.record).toEqual(winner);
    });

    it("replaces only the revision it read, and raises the revision", async () => {
      const record = contractSchedule();
      await store.create(record);
      const first = await store.replace({ ...record, paused: true });
      expect(first.status).toBe("applied");
      if (first.status !== "applied") return;
      expect(first.record.revision).toBe(record.revision + 1);
      expect(first.record.paused).toBe(true);
      const stale = await store.replace({ ...record, fired: 9 });
      expect(stale.status).toBe("conflict");
      if (stale.status === "conflict") expect(stale.record).toEqual(first.record);
      expect(await store.get(record.id)).toEqual(first.record);
    });

    it("lets exactly one of two clients replace one revision", async () => {
      const peer = subject.connectPeer === undefined ? store : await subject.connectPeer();
      const record = contractSchedule();
      await store.create(record);
      const results = await Promise.all([
        store.replace({ ...record, fired: 1 }), peer.replace({ ...record, fired: 2 }), store.replace({ ...record, fired: 3 }), peer.replace({ ...record, fired: 4 }),
      ]);
      const applied = results.filter((r) => r.status === "applied");
      expect(applied).toHaveLength(1);
      expect(results.filter((r) => r.status === "conflict")).toHaveLength(3);
      const stored = await store.get(record.id);
      expect(stored?.revision).toBe(record.revision + 1);
      expect(applied[0]?.status === "applied" && applied[0].record).toEqual(stored);
    });

    it("answers not_found to a replace of a deleted schedule; delete is idempotent", async () => {
      const record = contractSchedule();
      await store.create(record);
      expect(await store.delete(record.id)).toBe(true);
      expect(await store.delete(record.id)).toBe(false);
      expect(await store.get(record.id)).toBeUndefined();
      expect((await store.replace(record)).status).toBe("not_found");
      expect((await store.create(record)).created).toBe(true);
    });

    it("lists by id, one page at a time", async () => {
      const prefix = `page-${randomUUID()}`;
      const ids = ["c", "a", "e", "b", "d"].map((s) => `${prefix}-${s}`);
      for (const id of ids) await store.create(contractSchedule({ id }));
      const seen: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const page = await store.list({ limit: 2, ...(cursor === undefined ? {} : { cursor }) });
        expect(page.records.length).toBeLessThanOrEqual(2);
        seen.push(...page.records.map((r) => r.id));
        cursor = page.nextCursor;
        pages++;
      } while (cursor !== undefined && pages < 10);
      expect(seen).toEqual([...ids].sort());
      expect(pages).toBe(3);
    });

    it("lists only what is due by dueBefore: pending ticks, or an unpaused next tick at or before it", async () => {
      const now = Date.now();
      const due = contractSchedule({ nextTick: now - 1 });
      const atEdge = contractSchedule({ nextTick: now + 5_000 });
      const later = contractSchedule({ nextTick: now + 60_000 });
      const paused = contractSchedule({ nextTick: now - 1, paused: true });
      const pausedPending = contractSchedule({ nextTick: now + 60_000, paused: true, pending: [{ tick: now - 10 }] });
      const ended = contractSchedule();
      delete ended.nextTick;
      for (const r of [due, atEdge, later, paused, pausedPending, ended]) await store.create(r);
      const page = await store.list({ dueBefore: now + 5_000 });
      expect(page.records.map((r) => r.id).sort()).toEqual([due.id, atEdge.id, pausedPending.id].sort());
      expect((await store.list()).records).toHaveLength(6);
    });

    it("rejects bad input with invalid_argument naming the field", async () => {
      expect(await rejectionOf(store.create(contractSchedule({ id: "" })))).toMatchObject({ code: "invalid_argument", details: { field: "record.id" } });
      expect(await rejectionOf(store.create(contractSchedule({ timing: { cron: "61 * * * *" } })))).toMatchObject({
        code: "invalid_argument", details: { field: "record.timing.cron" },
      });
      expect(await rejectionOf(store.replace(contractSchedule({ revision: -1 })))).toMatchObject({ code: "invalid_argument", details: { field: "record.revision" } });
      expect(await rejectionOf(store.list({ limit: 0 }))).toMatchObject({ code: "invalid_argument", details: { field: "limit" } });
      expect(await rejectionOf(store.get(42 as unknown as string))).toMatchObject({ code: "invalid_argument", details: { field: "id" } });
    });

    it("rejects with queue_closed after close()", async () => {
      await store.close();
      await store.close();
      expect(await rejectionOf(store.get("x"))).toMatchObject({ code: "queue_closed" });
      expect(await rejectionOf(store.create(contractSchedule()))).toMatchObject({ code: "queue_closed" });
    });
  });
}
