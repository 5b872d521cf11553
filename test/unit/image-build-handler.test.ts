import { describe, expect, it } from "vitest";
import { parseBuildStep } from "../../src/worker/handlers/docker-build.ts";
import { createImageBuildHandler, parseImageBuildPayload } from "../../src/worker/handlers/image-build.ts";

describe("parseImageBuildPayload", () => {
  it("accepts a context, several tags and the docker.build fields", () => {
    expect(parseImageBuildPayload({ context: "/srv/app", tags: ["app:1", "registry.example.com/team/app:latest"], buildArgs: { V: "1" }, target: "prod" })).toEqual({
      context: "/srv/app",
      tags: ["app:1", "registry.example.com/team/app:latest"],
      buildArgs: { V: "1" },
      target: "prod",
    });
  });

  it.each([
    [{ context: "/srv/app" }, "payload.tags"],
    [{ context: "/srv/app", tags: [] }, "payload.tags"],
    [{ context: "/srv/app", tags: ["ok:1", "Not A Tag"] }, "payload.tags[1]"],
    [{ context: "-rf", tags: ["ok:1"] }, "payload.context"],
    [{ context: "/srv/app", tags: ["ok:1"], extra: true }, "extra"],
  ])("refuses %j naming %s", (payload, field) => {
    expect(() => parseImageBuildPayload(payload)).toThrow(expect.objectContaining({ code: "invalid_argument", message: expect.stringContaining(field) }));
  });
});

describe("parseBuildStep for buildah and podman", () => {
  it("reads `STEP n/m:` lines, with the stage of a multi-stage build", () => {
    expect(parseBuildStep("STEP 2/3: COPY busybox /bin/busybox")).toEqual({ stage: "", step: 2, total: 3, instruction: "COPY busybox /bin/busybox" });
    expect(parseBuildStep("[1/2] STEP 1/4: FROM golang AS build")).toEqual({ stage: "1/2", step: 1, total: 4, instruction: "FROM golang AS build" });
    expect(parseBuildStep("COMMIT app:1")).toBeUndefined();
  });
});

describe("createImageBuildHandler", () => {
  it("refuses an unknown engine and a command without an engine", () => {
    expect(() => createImageBuildHandler({ engine: "kaniko" as never })).toThrow(expect.objectContaining({ code: "invalid_argument" }));
    expect(() => createImageBuildHandler({ command: "/opt/buildah" })).toThrow(expect.objectContaining({ code: "invalid_argument", message: expect.stringContaining("engine") }));
  });
});
