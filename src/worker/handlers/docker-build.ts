import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OrchestratorError, invalidArgument } from "../../errors.ts";
import { raceSignal } from "../../signals.ts";
import { checkBoolean, checkInteger, checkObject, checkString, optional } from "../../validate.ts";
import type { JobContext } from "../types.ts";
import { checkPayloadFields, checkVariables } from "./payload.ts";
import { describeExit, runProcess, type OutputStream } from "./process-runner.ts";

/** The payload of a `docker build` job. Validated field by field; unknown fields are refused. */
export interface DockerBuildPayload {
  /** The build context: a directory on the worker (relative to the handler's `cwd`) or a Git / HTTP URL. */
  context: string;
  /** The image reference to tag the result with, such as `registry.example.com/team/app:1.2`. */
  tag: string;
  /** The Dockerfile, when it is not `<context>/Dockerfile`. */
  dockerfile?: string;
  /** `--build-arg` values by name. */
  buildArgs?: Record<string, string>;
  /** The stage of a multi-stage Dockerfile to build. */
  target?: string;
  /** The target platform, such as `linux/arm64`. */
  platform?: string;
  /** Build without the cache. */
  noCache?: boolean;
}

/** What a `docker build` job returns. */
export interface DockerBuildResult {
  tag: string;
  /** The image id (`sha256:…`) when Docker reported one. */
  imageId?: string;
  durationMs: number;
}

/**
 * Which builder runs the build. `buildkit` is `docker buildx build` behind `docker build`
 * (needs the buildx plugin); `classic` is the legacy builder.
 */
export type DockerBuilder = "auto" | "buildkit" | "classic";

/** Options of {@link createDockerBuildHandler}. */
export interface DockerBuildHandlerOptions {
  /**
   * The Docker CLI to run: a name looked up on `PATH` or a path.
   * @default "docker"
   */
  docker?: string;
  /**
   * The environment of the Docker CLI (`DOCKER_HOST`, `DOCKER_CONFIG`, …).
   * @default process.env
   */
  env?: NodeJS.ProcessEnv;
  /**
   * The directory relative contexts and Dockerfiles are resolved against.
   * @default process.cwd()
   */
  cwd?: string;
  /**
   * `auto` follows `DOCKER_BUILDKIT` when it is set, else uses BuildKit when `docker buildx`
   * is installed (asked once per handler) and the classic builder otherwise.
   * @default "auto"
   */
  builder?: DockerBuilder;
  /**
   * How long a cancelled build's process group gets between SIGTERM and SIGKILL.
   * @default 10000
   */
  graceMs?: number;
}

/** A build step announced in the output: classic `Step 2/5 : RUN make`, BuildKit `#7 [build 2/5] RUN make`. */
export interface BuildStep {
  /** The stage (BuildKit, multi-stage builds), or "" for the classic builder's global count. */
  stage: string;
  step: number;
  total: number;
  instruction: string;
}

const payloadFields = new Set(["context", "tag", "dockerfile", "buildArgs", "target", "platform", "noCache"]);
// Docker's reference grammar, simplified: lowercase path components joined by `.`, `_`, `__` or
// dashes, an optional registry port, an optional tag.
const component = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const referencePattern = new RegExp(`^${component}(?::[0-9]+)?(?:/${component})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$`);
const targetPattern = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const platformPattern = /^[a-z0-9_]+\/[a-z0-9_]+(?:\/[a-z0-9_.]+)?(?:,[a-z0-9_]+\/[a-z0-9_]+(?:\/[a-z0-9_.]+)?)*$/;
const classicStep = /^Step (\d+)\/(\d+) : (.*)$/;
// `#7 [2/5] RUN …`, `#7 [build 2/5] RUN …`, `#7 [linux/amd64 build 2/5] RUN …`
const buildkitStep = /^#\d+ \[((?:\S+ )*?)(\d+)\/(\d+)\] (.*)$/;
// buildah and podman: `STEP 2/5: RUN …`, in a multi-stage build `[2/3] STEP 2/5: RUN …`
const buildahStep = /^(?:\[(\d+\/\d+)\] )?STEP (\d+)\/(\d+): (.*)$/;
const daemonUnreachable =
  /Cannot connect to the Docker daemon|Is the docker daemon running|error during connect|failed to connect to the docker API|permission denied while trying to connect to the Docker daemon/i;

/**
 * Validates a `docker build` payload.
 * @throws {OrchestratorError} `invalid_argument` (never retried) naming the bad field.
 */
export function parseDockerBuildPayload(payload: unknown): DockerBuildPayload {
  const input = checkPayloadFields(payload, payloadFields);
  const context = checkString("payload.context", input.context, 4096);
  // A leading dash would be read as an option: the context is the one positional argument.
  if (context.startsWith("-")) throw invalidArgument("payload.context", "a path or URL not starting with `-`", context);
  const tag = checkString("payload.tag", input.tag, 255);
  if (!referencePattern.test(tag)) throw invalidArgument("payload.tag", "a Docker image reference such as `registry.example.com/team/app:1.2`", tag);
  const result: DockerBuildPayload = { context, tag };
  if (input.dockerfile !== undefined) result.dockerfile = checkString("payload.dockerfile", input.dockerfile, 4096);
  if (input.buildArgs !== undefined) result.buildArgs = checkVariables("payload.buildArgs", input.buildArgs);
  if (input.target !== undefined) {
    const target = checkString("payload.target", input.target, 128);
    if (!targetPattern.test(target)) throw invalidArgument("payload.target", "a stage name", target);
    result.target = target;
  }
  if (input.platform !== undefined) {
    const platform = checkString("payload.platform", input.platform, 256);
    if (!platformPattern.test(platform)) throw invalidArgument("payload.platform", "a platform such as `linux/arm64`", platform);
    result.platform = platform;
  }
  if (input.noCache !== undefined) result.noCache = checkBoolean("payload.noCache", input.noCache);
  return result;
}

/** Recognises a build step line of any builder (classic, BuildKit, buildah/podman); undefined for any other line. */
export function parseBuildStep(line: string): BuildStep | undefined {
  const classic = classicStep.exec(line);
  if (classic) return { stage: "", step: Number(classic[1]), total: Number(classic[2]), instruction: classic[3] ?? "" };
  const buildkit = buildkitStep.exec(line);
  if (buildkit) return { stage: (buildkit[1] ?? "").trim(), step: Number(buildkit[2]), total: Number(buildkit[3]), instruction: buildkit[4] ?? "" };
  const buildah = buildahStep.exec(line);
  if (buildah) return { stage: buildah[1] ?? "", step: Number(buildah[2]), total: Number(buildah[3]), instruction: buildah[4] ?? "" };
  return undefined;
}

/**
 * Creates a handler that runs `docker build` for a {@link DockerBuildPayload}.
 *
 * The build output streams to `ctx.log` line by line (both streams; BuildKit with
 * `--progress=plain`), every new build step reports `ctx.progress` (the share of steps begun,
 * over all stages seen), and `ctx.signal` kills the build's whole process group (SIGTERM, then
 * SIGKILL after `graceMs`) and rejects with the signal's reason.
 *
 * @throws {OrchestratorError} `invalid_argument` for a bad payload; `handler_failed` not
 * retryable when Docker is not installed (`details.docker: "not_installed"`) or its daemon is not
 * reachable (`details.docker: "daemon_unreachable"`); `handler_failed` with the exit code and
 * the last output lines when the build fails.
 *
 * @example
 * ```ts
 * await serveWorker({ handlers: { "docker.build": createDockerBuildHandler() }, port: 50051 });
 * // then: client.submit({ type: "docker.build", payload: { context: "/srv/app", tag: "app:dev" } })
 * ```
 */
export function createDockerBuildHandler(
  options: DockerBuildHandlerOptions = {},
): (payload: DockerBuildPayload, ctx: JobContext) => Promise<DockerBuildResult> {
  checkObject("options", options);
  const docker = optional(options.docker, "docker", (value) => checkString("docker", value, 4096));
  const env = optional(options.env, process.env, (value) => checkObject("env", value) as NodeJS.ProcessEnv);
  const cwd = optional(options.cwd, process.cwd(), (value) => checkString("cwd", value, 4096));
  const builderOption = optional<DockerBuilder>(options.builder, "auto", (value) => {
    if (value !== "auto" && value !== "buildkit" && value !== "classic") throw invalidArgument("builder", '"auto", "buildkit" or "classic"', value);
    return value;
  });
  const graceMs = optional(options.graceMs, 10_000, (value) => checkInteger("graceMs", value, 0));

  let detected: Promise<"buildkit" | "classic"> | undefined;
  const builder = (signal: AbortSignal) => {
    if (builderOption !== "auto") return Promise.resolve(builderOption);
    const flag = env.DOCKER_BUILDKIT?.toLowerCase();
    if (flag === "0" || flag === "false") return Promise.resolve("classic" as const);
    if (flag === "1" || flag === "true") return Promise.resolve("buildkit" as const);
    // Shared by the jobs that start together, so it runs under its own timeout, not one job's signal.
    detected ??= runProcess({ command: docker, args: ["buildx", "version"], cwd, env, signal: AbortSignal.timeout(15_000), graceMs: 1000 }).then(
      (result) => (result.exitCode === 0 ? "buildkit" : "classic"),
      (error: unknown) => {
        detected = undefined; // a missing binary may be installed by the next job
        throw translateSpawnError(error, docker);
      },
    );
    return raceSignal(detected, signal);
  };

  return async (rawPayload: unknown, ctx: JobContext): Promise<DockerBuildResult> => {
    const payload = parseDockerBuildPayload(rawPayload);
    const kind = await builder(ctx.signal);
    const scratch = await mkdtemp(join(tmpdir(), "blacktree-docker-build-"));
    try {
      const iidfile = join(scratch, "iid");
      const args = ["build", `--tag=${payload.tag}`, `--iidfile=${iidfile}`];
      if (kind === "buildkit") args.push("--progress=plain");
      if (payload.dockerfile !== undefined) args.push(`--file=${payload.dockerfile}`);
      if (payload.target !== undefined) args.push(`--target=${payload.target}`);
      if (payload.platform !== undefined) args.push(`--platform=${payload.platform}`);
      if (payload.noCache) args.push("--no-cache");
      for (const [name, value] of Object.entries(payload.buildArgs ?? {})) args.push(`--build-arg=${name}=${value}`);
      args.push(payload.context);

      const progress = stepProgress();
      let daemonLine: string | undefined;
      let printedImageId: string | undefined;
      const onLine = (line: string, stream: OutputStream) => {
        ctx.log(line, stream);
        const step = parseBuildStep(line);
        if (step) {
          const update = progress.begin(step);
          if (update) ctx.progress(update.progress, update.message);
        } else if (daemonUnreachable.test(line)) {
          daemonLine ??= line;
        } else {
          printedImageId = imageIdIn(line) ?? printedImageId;
        }
      };

      const result = await runProcess({
        command: docker,
        args,
        cwd,
        env: builderEnv(env, kind, builderOption),
        signal: ctx.signal,
        onLine,
        graceMs,
        tailLines: 15,
      }).catch((error: unknown) => {
        throw translateSpawnError(error, docker);
      });

      if (result.exitCode !== 0) {
        if (daemonLine !== undefined) {
          const host = env.DOCKER_HOST ?? "the default socket";
          throw new OrchestratorError("handler_failed", `the Docker daemon is not reachable from this worker (is it running? DOCKER_HOST: ${host}): ${daemonLine}`, {
            retryable: false,
            details: { docker: "daemon_unreachable", exitCode: result.exitCode },
          });
        }
        const tail = (result.stderrTail.length > 0 ? result.stderrTail : result.stdoutTail).slice(-5);
        throw new OrchestratorError("handler_failed", `docker build of ${payload.tag} ${describeExit(result)}${tail.length > 0 ? `:\n${tail.join("\n")}` : ""}`, {
          details: { exitCode: result.exitCode, signal: result.signalCode, tail },
        });
      }

      const imageId = (await readFile(iidfile, "utf8").catch(() => "")).trim() || printedImageId;
      ctx.progress(1, `built ${payload.tag}`);
      return { tag: payload.tag, ...(imageId ? { imageId } : {}), durationMs: result.durationMs };
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  };
}

/**
 * Pins the builder the arguments were made for (`--progress` exists only with BuildKit). A
 * classic build that `auto` chose because buildx is missing keeps the env as it is, so the CLI's
 * own notice says to install buildx rather than to unset a DOCKER_BUILDKIT=0 nobody set.
 */
function builderEnv(env: NodeJS.ProcessEnv, kind: "buildkit" | "classic", option: DockerBuilder): NodeJS.ProcessEnv {
  if (kind === "buildkit") return { ...env, DOCKER_BUILDKIT: "1" };
  return option === "classic" ? { ...env, DOCKER_BUILDKIT: "0" } : env;
}

/** Turns "the docker binary is missing" into the clear error; passes anything else through. */
function translateSpawnError(error: unknown, docker: string): unknown {
  if (error instanceof OrchestratorError && error.details.errno === "ENOENT" && error.details.cwd === undefined) {
    return new OrchestratorError(
      "handler_failed",
      `Docker is not installed on this worker: \`${docker}\` was not found (install the Docker CLI or set the handler's \`docker\` option)`,
      { retryable: false, cause: error, details: { docker: "not_installed" } },
    );
  }
  return error;
}

/** The image id the builders print at the end: classic `Successfully built 0a1b…`, BuildKit `writing image sha256:…`. */
function imageIdIn(line: string): string | undefined {
  return /^Successfully built ([0-9a-f]{12,64})$/.exec(line)?.[1] ?? /writing image (sha256:[0-9a-f]{64})/.exec(line)?.[1];
}

/**
 * Turns step announcements into progress: the share of steps begun before the current one,
 * summed over the stages seen so far, never going backwards when a new stage shows up.
 * BuildKit repeats a step's header when its output interleaves with another's; repeats are ignored.
 * @internal
 */
export function stepProgress(): { begin(step: BuildStep): { progress: number; message: string } | undefined } {
  const stages = new Map<string, { begun: number; total: number }>();
  let last = 0;
  return {
    begin(step: BuildStep): { progress: number; message: string } | undefined {
      const stage = stages.get(step.stage);
      if (stage && stage.begun >= step.step) return undefined;
      stages.set(step.stage, { begun: step.step, total: Math.max(step.total, step.step) });
      let done = 0;
      let total = 0;
      for (const s of stages.values()) {
        done += s.begun - 1;
        total += s.total;
      }
      last = Math.max(last, total === 0 ? 0 : done / total);
      const instruction = step.instruction.length > 200 ? `${step.instruction.slice(0, 197)}...` : step.instruction;
      return { progress: last, message: `step ${step.step}/${step.total}${step.stage ? ` (${step.stage})` : ""}: ${instruction}` };
    },
  };
}
