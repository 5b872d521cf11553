import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, expectTypeOf, it } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import { cancelError } from "../../src/signals.ts";
import {
  createDockerBuildHandler,
  parseBuildStep,
  parseDockerBuildPayload,
  type DockerBuildPayload,
  type DockerBuildResult,
} from "../../src/worker/handlers/docker-build.ts";
import type { JobHandler } from "../../src/worker/types.ts";
import { fakeJobContext } from "../helpers/job-context.ts";
import { isRunning, readPid, scriptDir } from "../helpers/processes.ts";

const scripts = scriptDir("blacktree-docker-");
afterAll(() => scripts.cleanup());

const imageId = `sha256:${"a".repeat(64)}`;

/**
 * A stand-in for the Docker CLI: answers `buildx version` per FAKE_BUILDX, records its
 * arguments, prints BuildKit-like (DOCKER_BUILDKIT=1, on stderr as BuildKit does) or classic
 * output, writes the --iidfile, and on request sleeps with a child, fails, or plays a dead daemon.
 */
const fakeDocker = scripts.write(
  "docker",
  String.raw`
if [ "$1" = buildx ]; then
  echo buildx >> "$FAKE_DIR/calls"
  [ "$FAKE_BUILDX" = 1 ] && { echo "github.com/docker/buildx v0.0.0-fake"; exit 0; }
  echo "docker: unknown command: docker buildx" >&2; exit 1
fi
[ "$1" = build ] || { echo "fake docker: unexpected $1" >&2; exit 2; }
printf '%s\n' "$@" > "$FAKE_DIR/args"
echo "$DOCKER_BUILDKIT" > "$FAKE_DIR/buildkit"
iid=""
for a in "$@"; do case "$a" in --iidfile=*) iid="${"$"}{a#--iidfile=}";; esac; done
if [ -n "$FAKE_DAEMON_DOWN" ]; then
  echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2; exit 1
fi
if [ "$DOCKER_BUILDKIT" = 1 ]; then
  echo '#0 building with "default" instance using docker driver' >&2
  echo "#1 [internal] load build definition from Dockerfile" >&2
  echo "#1 DONE 0.0s" >&2
  echo "#5 [build 1/2] FROM docker.io/library/alpine:3.20" >&2
  echo "#6 [build 2/2] RUN make" >&2
  echo "#6 0.101 compiling" >&2
  echo "#7 [stage-1 1/2] FROM docker.io/library/alpine:3.20" >&2
  echo "#6 [build 2/2] RUN make" >&2
  echo "#8 [stage-1 2/2] COPY --from=build /out /out" >&2
  echo "#9 writing image sha256:${"$"}(printf 'b%.0s' $(seq 64)) done" >&2
else
  echo "Step 1/3 : FROM alpine:3.20"
  echo " ---> 1234567890ab"
  echo "Step 2/3 : RUN make"
  echo "warning: slow" >&2
  echo "Step 3/3 : COPY . /out"
  echo "Successfully built 0123456789ab"
fi
if [ -n "$FAKE_SLEEP" ]; then
  sleep 30 & echo $! > "$FAKE_DIR/child.pid"; echo $$ > "$FAKE_DIR/leader.pid"; echo waiting; wait
fi
if [ -n "$FAKE_FAIL" ]; then
  echo 'ERROR: failed to solve: process "/bin/sh -c make" did not complete successfully: exit code: 2' >&2; exit 1
fi
[ -n "$iid" ] && [ -z "$FAKE_NO_IID" ] && printf 'sha256:%s' "$(printf 'a%.0s' $(seq 64))" > "$iid"
exit 0
`,
);

let runs = 0;
/** A handler on the fake docker with its own record dir; `fake` sets the FAKE_* switches. */
function setup(fake: Record<string, string> = {}, options: Parameters<typeof createDockerBuildHandler>[0] = {}) {
  const dir = join(scripts.dir, `run-${++runs}`);
  mkdirSync(dir);
  const handler = createDockerBuildHandler({ docker: fakeDocker, env: { ...process.env, DOCKER_BUILDKIT: "", FAKE_DIR: dir, ...fake }, ...options });
  return {
    handler,
    dir,
    args: () => readFileSync(join(dir, "args"), "utf8").trim().split("\n"),
    buildkit: () => readFileSync(join(dir, "buildkit"), "utf8").trim(),
    buildxCalls: () => {
      try {
        return readFileSync(join(dir, "calls"), "utf8").trim().split("\n").length;
      } catch {
        return 0;
      }
    },
  };
}

describe("createDockerBuildHandler", () => {
  it("is a JobHandler", () => {
    expectTypeOf(createDockerBuildHandler()).toExtend<JobHandler<DockerBuildPayload, DockerBuildResult>>();
  });

  it("runs BuildKit with plain progress and every payload option, logs stderr lines and reports progress per step", async () => {
    const { handler, args, buildkit } = setup({ FAKE_BUILDX: "1" });
    const { ctx, logs, progress } = fakeJobContext();
    const result = await handler(
      {
        context: "./app",
        tag: "registry.example.com:5000/team/app:1.2",
        dockerfile: "docker/Dockerfile",
        target: "runtime",
        platform: "linux/arm64",
        noCache: true,
        buildArgs: { VERSION: "1.2", EMPTY: "" },
      },
      ctx,
    );

    expect(result).toEqual({ tag: "registry.example.com:5000/team/app:1.2", imageId, durationMs: expect.any(Number) });
    const argv = args();
    expect(argv[0]).toBe("build");
    expect(argv[2]).toMatch(/^--iidfile=/);
    expect(argv.filter((a) => !a.startsWith("--iidfile="))).toEqual([
      "build",
      "--tag=registry.example.com:5000/team/app:1.2",
      "--progress=plain",
      "--file=docker/Dockerfile",
      "--target=runtime",
      "--platform=linux/arm64",
      "--no-cache",
      "--build-arg=VERSION=1.2",
      "--build-arg=EMPTY=",
      "./app",
    ]);
    expect(buildkit()).toBe("1");
    expect(logs).toContainEqual({ line: "#6 0.101 compiling", stream: "stderr" });
    expect(logs).toHaveLength(10);
    expect(progress).toEqual([
      { progress: 0, message: "step 1/2 (build): FROM docker.io/library/alpine:3.20" },
      { progress: 0.5, message: "step 2/2 (build): RUN make" },
      // A new stage lowers the share of steps done; progress does not go back.
      { progress: 0.5, message: "step 1/2 (stage-1): FROM docker.io/library/alpine:3.20" },
      { progress: 0.5, message: "step 2/2 (stage-1): COPY --from=build /out /out" },
      { progress: 1, message: "built registry.example.com:5000/team/app:1.2" },
    ]);
  });

  it("falls back to the classic builder without buildx, asks only once, and follows its Step N/M lines", async () => {
    const { handler, args, buildkit, buildxCalls } = setup({ FAKE_BUILDX: "0" });
    const { ctx, logs, progress } = fakeJobContext();
    const result = await handler({ context: ".", tag: "app" }, ctx);
    await handler({ context: ".", tag: "app" }, fakeJobContext().ctx);

    expect(result.imageId).toBe(imageId);
    expect(args()).not.toContain("--progress=plain");
    // The CLI, like us, picks its legacy builder without buildx; no DOCKER_BUILDKIT=0 is forced on it.
    expect(buildkit()).toBe("");
    expect(buildxCalls()).toBe(1);
    expect(logs).toContainEqual({ line: "Step 2/3 : RUN make", stream: "stdout" });
    expect(logs).toContainEqual({ line: "warning: slow", stream: "stderr" });
    expect(progress.map((p) => p.progress)).toEqual([0, 1 / 3, 2 / 3, 1]);
    expect(progress[1]?.message).toBe("step 2/3: RUN make");
  });

  it("follows DOCKER_BUILDKIT=0 in its env even when buildx is installed", async () => {
    const { handler, buildkit, buildxCalls } = setup({ FAKE_BUILDX: "1", DOCKER_BUILDKIT: "0" });
    await handler({ context: ".", tag: "app" }, fakeJobContext().ctx);
    expect(buildkit()).toBe("0");
    expect(buildxCalls()).toBe(0);
  });

  it("pins DOCKER_BUILDKIT=0 when the classic builder is chosen, and reads the image id from the output without an iidfile", async () => {
    const { handler, buildkit, buildxCalls } = setup({ FAKE_NO_IID: "1", FAKE_BUILDX: "1" }, { builder: "classic" });
    expect((await handler({ context: ".", tag: "app" }, fakeJobContext().ctx)).imageId).toBe("0123456789ab");
    expect(buildkit()).toBe("0");
    expect(buildxCalls()).toBe(0);
  });

  it("reads BuildKit's image id from the output when there is no iidfile", async () => {
    const { handler } = setup({ FAKE_NO_IID: "1" }, { builder: "buildkit" });
    expect((await handler({ context: ".", tag: "app" }, fakeJobContext().ctx)).imageId).toBe(`sha256:${"b".repeat(64)}`);
  });

  it("on cancel kills the build's whole process group, child included, and rejects with the signal's reason", async () => {
    const { handler, dir } = setup({ FAKE_SLEEP: "1" }, { builder: "buildkit", graceMs: 5000 });
    const reason = cancelError("requested");
    const controller = new AbortController();
    const { ctx } = fakeJobContext({
      signal: controller.signal,
      log: (line) => line === "waiting" && controller.abort(reason),
    });
    const started = performance.now();
    await expect(handler({ context: ".", tag: "app" }, ctx)).rejects.toBe(reason);
    expect(performance.now() - started).toBeLessThan(2000);
    expect(isRunning(readPid(join(dir, "leader.pid")))).toBe(false);
    expect(isRunning(readPid(join(dir, "child.pid")))).toBe(false);
  });

  it("fails a broken build with handler_failed carrying the exit code and the last lines", async () => {
    const { handler } = setup({ FAKE_FAIL: "1" }, { builder: "buildkit" });
    const error = await handler({ context: ".", tag: "app" }, fakeJobContext().ctx).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OrchestratorError);
    expect(error).toMatchObject({ code: "handler_failed", details: { exitCode: 1 } });
    expect((error as Error).message).toMatch(/docker build of app exited with code 1:[\s\S]*ERROR: failed to solve/);
  });

  it("fails clearly and without retry when the Docker daemon is down", async () => {
    const { handler } = setup({ FAKE_DAEMON_DOWN: "1" }, { builder: "classic" });
    const error = await handler({ context: ".", tag: "app" }, fakeJobContext().ctx).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "handler_failed", retryable: false, details: { docker: "daemon_unreachable" } });
    expect((error as Error).message).toMatch(/Docker daemon is not reachable/);
  });

  it.each([
    ["a path that does not exist", "/nonexistent/bin/docker"],
    ["a name not on PATH", "blacktree-no-such-docker"],
  ])("fails clearly and without retry when Docker is not installed (%s)", async (_, docker) => {
    const handler = createDockerBuildHandler({ docker });
    const error = await handler({ context: ".", tag: "app" }, fakeJobContext().ctx).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "handler_failed", retryable: false, details: { docker: "not_installed" } });
    expect((error as Error).message).toContain(`Docker is not installed on this worker: \`${docker}\` was not found`);
  });

  const realDocker = (() => {
    try {
      return execFileSync("/bin/sh", ["-c", "command -v docker"], { encoding: "utf8" }).trim();
    } catch {
      return "";
    }
  })();
  if (!realDocker) console.warn("docker-build-handler.test: no `docker` CLI on PATH; skipping the real-client test");

  it.skipIf(!realDocker)("fails clearly with the real docker client when no daemon answers", async () => {
    const context = join(scripts.dir, "real-context");
    mkdirSync(context);
    writeFileSync(join(context, "Dockerfile"), "FROM scratch\n");
    // A socket nobody listens on, so the test means the same where a daemon does run.
    const handler = createDockerBuildHandler({ env: { ...process.env, DOCKER_HOST: "unix:///nonexistent/blacktree-docker.sock" } });
    const { ctx, logs } = fakeJobContext();
    const error = await handler({ context, tag: "blacktree-test:never" }, ctx).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "handler_failed", retryable: false, details: { docker: "daemon_unreachable" } });
    expect((error as Error).message).toMatch(/Docker daemon is not reachable from this worker .*DOCKER_HOST: unix:\/\/\/nonexistent/);
    expect(logs.length).toBeGreaterThan(0);
  });

  it("refuses bad options with invalid_argument", () => {
    expect(() => createDockerBuildHandler({ builder: "kaniko" as "auto" })).toThrow(/`builder`/);
    expect(() => createDockerBuildHandler({ graceMs: -5 })).toThrow(/`graceMs`/);
  });
});

describe("parseDockerBuildPayload", () => {
  it.each([
    ["not an object", "app", "payload"],
    ["no context", { tag: "app" }, "payload.context"],
    ["a context read as an option", { context: "--rm", tag: "app" }, "payload.context"],
    ["an uppercase tag", { context: ".", tag: "App:1" }, "payload.tag"],
    ["a tag with spaces", { context: ".", tag: "app 1" }, "payload.tag"],
    ["a build arg that is no variable name", { context: ".", tag: "app", buildArgs: { "A B": "1" } }, "payload.buildArgs"],
    ["a build arg that is no string", { context: ".", tag: "app", buildArgs: { A: 1 } }, "payload.buildArgs.A"],
    ["a bad platform", { context: ".", tag: "app", platform: "arm64" }, "payload.platform"],
    ["a bad target", { context: ".", tag: "app", target: "-x" }, "payload.target"],
    ["noCache that is no boolean", { context: ".", tag: "app", noCache: "yes" }, "payload.noCache"],
    ["an unknown field", { context: ".", tag: "app", buildargs: {} }, "payload.buildargs"],
  ])("refuses %s as a non-retryable invalid_argument", (_, payload, field) => {
    expect(() => parseDockerBuildPayload(payload)).toThrow(expect.objectContaining({ code: "invalid_argument", retryable: false, details: { field } }));
  });

  it("rejects a bad payload before looking for Docker", async () => {
    const handler = createDockerBuildHandler({ docker: "/nonexistent/bin/docker" });
    await expect(handler({ context: ".", tag: "Bad Tag" } as never, fakeJobContext().ctx)).rejects.toMatchObject({ code: "invalid_argument" });
  });
});

describe("parseBuildStep", () => {
  it.each([
    ["Step 2/5 : RUN make", { stage: "", step: 2, total: 5, instruction: "RUN make" }],
    ["#7 [2/5] RUN make", { stage: "", step: 2, total: 5, instruction: "RUN make" }],
    ["#7 [build 2/5] RUN make", { stage: "build", step: 2, total: 5, instruction: "RUN make" }],
    ["#12 [linux/amd64 build 3/4] COPY . .", { stage: "linux/amd64 build", step: 3, total: 4, instruction: "COPY . ." }],
    ["#1 [internal] load build definition from Dockerfile", undefined],
    ["#7 0.211 [2/5] from the build's own output", undefined],
    [" ---> Running in 0a1b2c", undefined],
  ])("reads %j", (line, step) => {
    expect(parseBuildStep(line)).toEqual(step);
  });
});
