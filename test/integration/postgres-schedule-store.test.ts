import { afterAll, describe, expect, it } from "vitest";
import { PostgresScheduleStore } from "../../src/store/postgres/index.ts";
import { contractSchedule, describeScheduleStoreContract } from "../../src/testing/contracts/schedule-store-contract.ts";
import { usePostgres } from "../helpers/postgres.ts";

const postgres = await usePostgres();
const SCHEMA = "t_schedules";

describe.skipIf(!postgres.available)("PostgresScheduleStore on PostgreSQL", () => {
  afterAll(() => postgres.query(`DROP SCHEMA IF EXISTS "${SCHEMA}" CASCADE`));

  describeScheduleStoreContract("PostgresScheduleStore", async () => {
    const store = new PostgresScheduleStore({ connectionString: postgres.url, schema: SCHEMA });
    await store.migrate();
    await postgres.query(`DELETE FROM "${SCHEMA}".schedules`);
    const peers: PostgresScheduleStore[] = [];
    return {
      store,
      // A second pool on its own connections, as another process would open.
      connectPeer: async () => {
        const peer = new PostgresScheduleStore({ connectionString: postgres.url, schema: SCHEMA });
        peers.push(peer);
        return peer;
      },
      dispose: async () => {
        for (const s of [store, ...peers]) await s.close();
      },
    };
  });

  it("keeps due_at in step with the record, so the scheduler's look-up uses the index", async () => {
    const store = new PostgresScheduleStore({ connectionString: postgres.url, schema: SCHEMA, poolSize: 1 });
    await store.migrate();
    const record = contractSchedule({ nextTick: 5_000 });
    await store.create(record);
    const read = async () => (await postgres.query<{ due_at: string | null }>(`SELECT due_at FROM "${SCHEMA}".schedules WHERE id = $1`, [record.id]))[0]?.due_at;
    expect(await read()).toBe("5000");
    await store.replace({ ...record, paused: true });
    expect(await read()).toBeNull();
    const indexes = await postgres.query<{ indexdef: string }>("SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = 'schedules'", [SCHEMA]);
    expect(indexes.some((i) => i.indexdef.includes("(due_at)"))).toBe(true);
    await store.close();
  });
});
