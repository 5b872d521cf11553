import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import { jobStoreSchemaSql, PostgresJobStore } from "../../src/store/postgres/index.ts";
import { contractRecord, describeJobStoreContract } from "../../src/testing/contracts/job-store-contract.ts";
import { usePostgres } from "../helpers/postgres.ts";
import { TcpProxy } from "../helpers/tcp-proxy.ts";

const postgres = await usePostgres();

describe.skipIf(!postgres.available)("PostgresJobStore on PostgreSQL", () => {
  afterAll(() => postgres.cleanup());

  describeJobStoreContract("PostgresJobStore", async (options) => {
    const schema = postgres.schemaName();
    const store = new PostgresJobStore({ ...options, connectionString: postgres.url, schema });
    await store.migrate();
    const peers: PostgresJobStore[] = [];
    return {
      store,
      // A second pool on its own connections, as another process would open.
      connectPeer: async () => {
        const peer = new PostgresJobStore({ ...options, connectionString: postgres.url, schema });
        peers.push(peer);
        return peer;
      },
      dispose: async () => {
        for (const s of [store, ...peers]) await s.close();
        await postgres.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      },
    };
  });

  it("migrate() is idempotent, also when several processes run it at once, and creates an index for every list filter", async () => {
    const schema = postgres.schemaName();
    const stores = [1, 2, 3].map(() => new PostgresJobStore({ connectionString: postgres.url, schema }));
    await Promise.all(stores.map((s) => s.migrate()));
    await stores[0]?.migrate();
    const indexes = (await postgres.query<{ indexdef: string }>("SELECT indexdef FROM pg_indexes WHERE schemaname = $1", [schema])).map((r) => r.indexdef);
    for (const column of ["(state, created_at DESC, id DESC)", "(type, created_at DESC, id DESC)", "(created_at DESC, id DESC)", "gin (metadata jsonb_path_ops)", "(finished_at)", "(start_by)", "(idempotency_key)", "(id)"]) {
      expect(indexes.some((def) => def.includes(column)), column).toBe(true);
    }
    expect(stores[0]?.schemaSql).toBe(jobStoreSchemaSql(schema));
    for (const s of stores) await s.close();
  });

  it("rejects with precondition_failed before migrate(), naming it", async () => {
    const store = new PostgresJobStore({ connectionString: postgres.url, schema: postgres.schemaName() });
    const error = await store.get("x").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OrchestratorError);
    expect((error as OrchestratorError).code).toBe("precondition_failed");
    expect((error as OrchestratorError).message).toContain("migrate()");
    await store.close();
  });

  it("uses a pool passed in and leaves it open on close()", async () => {
    const pool = new pg.Pool({ connectionString: postgres.url, max: 2 });
    const store = new PostgresJobStore({ pool, schema: postgres.schemaName() });
    await store.migrate();
    const { record } = await store.create(contractRecord());
    await store.close();
    expect((await pool.query("SELECT 1 AS one")).rows[0]).toEqual({ one: 1 });
    await pool.end();
    expect(record.state).toBe("queued");
  });

  it("writes concurrent creates and transitions in batches, fewer transactions than operations", async () => {
    const schema = postgres.schemaName();
    const store = new PostgresJobStore({ connectionString: postgres.url, schema, concurrentBatches: 1 });
    await store.migrate();
    const [before] = await postgres.query<{ n: string }>("SELECT xact_commit::text AS n FROM pg_stat_database WHERE datname = current_database()");
    const created = await Promise.all(Array.from({ length: 200 }, () => store.create(contractRecord())));
    await Promise.all(created.map(({ record }) => store.record({ kind: "started", jobId: record.id, attempt: 1, fencingToken: 1, workerId: "w", at: Date.now() })));
    const [after] = await postgres.query<{ n: string }>("SELECT xact_commit::text AS n FROM pg_stat_database WHERE datname = current_database()");
    // 400 operations; one transaction per batch (plus the stats queries and other sessions on the machine).
    expect(Number(after?.n) - Number(before?.n)).toBeLessThan(200);
    expect((await store.counts()).running).toBe(200);
    await store.close();
  });

  it("keeps a job's start waiting for its own outcome while other jobs' outcomes are written, then writes both at once", async () => {
    const store = new PostgresJobStore({ connectionString: postgres.url, schema: postgres.schemaName(), lingerMs: 60_000 });
    await store.migrate();
    const [{ record: a }, { record: b }] = await Promise.all([store.create(contractRecord()), store.create(contractRecord())]);
    const order: string[] = [];
    const startedA = store.record({ kind: "started", jobId: a.id, attempt: 1, fencingToken: 1, workerId: "w", at: Date.now() }).then((r) => order.push(`started a: ${r.status}`));
    const outcome = { status: "completed", result: 1 } as const;
    order.push(`finished b: ${(await store.record({ kind: "finished", jobId: b.id, attempt: 1, fencingToken: 1, outcome, started: false, at: Date.now() })).status}`);
    expect((await store.get(a.id))?.state).toBe("queued");
    order.push(`finished a: ${(await store.record({ kind: "finished", jobId: a.id, attempt: 1, fencingToken: 1, outcome, started: true, workerId: "w", at: Date.now() })).status}`);
    await startedA;
    expect(order).toEqual(["finished b: applied", "started a: applied", "finished a: applied"]);
    const stored = await store.get(a.id);
    expect(stored?.state).toBe("completed");
    expect(stored?.attempts.map((t) => ({ workerId: t.workerId, outcome: t.outcome }))).toEqual([{ workerId: "w", outcome: "completed" }]);
    await store.close();
  });

  it("rejects the operations of a batch with unavailable when its connection dies mid-write, and works again after", async () => {
    const proxy = await TcpProxy.start({ port: 5432 });
    const store = new PostgresJobStore({ connectionString: proxy.url(postgres.url), schema: postgres.schemaName(), poolSize: 1 });
    await store.migrate();
    // The write goes out on the pool's idle connection into the black hole; dropping that
    // connection kills the batch in flight.
    proxy.blackhole();
    const writing = store.create(contractRecord()).catch((e: unknown) => e);
    await new Promise((resolve) => setTimeout(resolve, 200));
    proxy.restore();
    const error = await writing;
    expect(error).toBeInstanceOf(OrchestratorError);
    expect((error as OrchestratorError).code).toBe("unavailable");
    const { created } = await store.create(contractRecord());
    expect(created).toBe(true);
    await store.close();
    await proxy.close();
  });
});
