import { describe, expect, expectTypeOf, it } from "vitest";
import type { JobTypesOf } from "../../src/client/types.ts";
import type { ServeWorkerOptions } from "../../src/worker/serve-worker.ts";
import type { JobHandlers } from "../../src/worker/types.ts";

// Checked by `tsc` (npm run typecheck covers test/): a wrong type fails the build, not the run.
describe("handler types", () => {
  it("gives an un-annotated inline serveWorker handler a payload of type unknown, not never", () => {
    const options: ServeWorkerOptions = {
      handlers: {
        echo: (payload, ctx) => {
          expectTypeOf(payload).toEqualTypeOf<unknown>();
          expectTypeOf(ctx.jobId).toEqualTypeOf<string>();
          return payload;
        },
        add: (payload: { a: number; b: number }) => payload.a + payload.b,
      },
    };
    expect(Object.keys(options.handlers)).toEqual(["echo", "add"]);
  });

  it("keeps annotated payload and result types for JobTypesOf", () => {
    const handlers = {
      add: async (payload: { a: number; b: number }) => ({ sum: payload.a + payload.b }),
    } satisfies JobHandlers;
    type Jobs = JobTypesOf<typeof handlers>;
    expectTypeOf<Jobs["add"]["payload"]>().toEqualTypeOf<{ a: number; b: number }>();
    expectTypeOf<Jobs["add"]["result"]>().toEqualTypeOf<{ sum: number }>();
    expect(typeof handlers.add).toBe("function");
  });
});
