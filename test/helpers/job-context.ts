import type { JobContext } from "../../src/worker/types.ts";

/** A `JobContext` for calling a handler directly, recording what it reports. */
export function fakeJobContext(overrides: Partial<JobContext> = {}) {
  const controller = new AbortController();
  const logs: { line: string; stream: "stdout" | "stderr" | undefined }[] = [];
  const progress: { progress: number; message: string | undefined }[] = [];
  const ctx: JobContext = {
    jobId: "job-1",
    attempt: 1,
    fencingToken: 1,
    type: "test",
    idempotencyKey: undefined,
    trace: undefined,
    signal: controller.signal,
    deadline: Date.now() + 60_000,
    shuttingDown: new AbortController().signal,
    progress: (value, message) => progress.push({ progress: value, message }),
    log: (line, stream) => logs.push({ line, stream }),
    ...overrides,
  };
  return { ctx, controller, logs, progress };
}
