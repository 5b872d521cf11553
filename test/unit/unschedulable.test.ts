import { describe, expect, it } from "vitest";
import { unschedulableReason } from "../../src/dispatcher/unschedulable.ts";
import type { WorkerInfo } from "../../src/worker-pool/types.ts";

const worker = (overrides: Partial<WorkerInfo>): WorkerInfo => ({ id: "w", state: "idle", slots: 1, busySlots: 0, labels: {}, ...overrides });

describe("unschedulableReason", () => {
  it("names the job type no worker serves", () => {
    expect(unschedulableReason([], { type: "x" })).toBe("no worker serves job type `x`");
    expect(unschedulableReason([worker({ jobTypes: ["y"] }), worker({ jobTypes: ["x"], state: "removed" })], { type: "x" })).toBe("no worker serves job type `x`");
  });

  it("names the labels no worker carries", () => {
    expect(unschedulableReason([worker({ labels: { arch: "amd64" } })], { type: "x", labels: { arch: "arm64" } })).toBe(
      "no worker with labels {arch: arm64} serves job type `x`",
    );
  });

  it("says when the only workers that could run it are not healthy", () => {
    const arm = worker({ labels: { arch: "arm64" }, state: "unhealthy" });
    expect(unschedulableReason([arm], { type: "x", labels: { arch: "arm64" } })).toBe("no healthy worker with labels {arch: arm64}");
    expect(unschedulableReason([worker({ state: "draining" })], { type: "x" })).toBe("no healthy worker serves job type `x`");
  });

  it("is undefined when a healthy worker can run it, busy or not", () => {
    expect(unschedulableReason([worker({ state: "busy", labels: { arch: "arm64" } })], { type: "x", labels: { arch: "arm64" } })).toBeUndefined();
  });
});
