import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { invalidArgument, OrchestratorError } from "../../errors.ts";
import { raceSignal } from "../../signals.ts";
import { checkInteger, checkObject, checkString, optional } from "../../validate.ts";
import type { JobContext } from "../types.ts";
import { parseBuildStep, parseDockerBuildPayload, stepProgress } from "./docker-build.ts";
import { checkPayloadFields } from "./payload.ts";
import { describeExit, runProcess, type OutputStream } from "./process-runner.ts";

/** The tool that builds: `docker build` (BuildKit when available), `podman build`, or `buildah bud`. */
export type ImageBuildEngine = "docker" | "podman" | "buildah";

/** The payload of an `image-build` job. Validated field by field; unknown fields are refused. */
export interface ImageBuildPayload {
  /** The build context: a directory on the worker (relative to the handler's `cwd`) or a Git / HTTP URL. */
  context: string;
  /** The image references to tag the result with (at least one), such as `registry.example.com/team/app:1.2`. */
  tags: string[];
  /** The Dockerfile / Containerfile, when it is not `<context>/Dockerfile`. */
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

/** What an `image-build` job returns. */
export interface ImageBuildResult {
  /** The image id (`sha256:…`). */
  imageId: string;
  tags: string[];
  /** The image's size in bytes as its engine reports it (buildah: the sum of its layers). */
  sizeBytes: number;
  durationMs: number;
  engine: ImageBuildEngine;
}

/** Options of {@link createImageBuildHandler}. */
export interface ImageBuildHandlerOptions {
  /**
   * Which engine builds. `auto` takes the first that works: docker (when its daemon answers),
   * podman, buildah; asked once per handler.
   * @default "auto"
   */
  engine?: ImageBuildEngine | "auto";
  /**
   * The engine's executable, when it is not the engine's name on `PATH`.
   * @default the engine's name
   */
  command?: string;
  /**
   * Arguments before the subcommand, for every call of the engine: storage settings such as
   * `["--root", dir, "--runroot", dir2, "--storage-driver", "vfs"]` (buildah, podman).
   * @default []
   */
  globalArgs?: readonly string[];
  /**
   * Extra arguments of the build subcommand, such as `["--isolation", "chroot"]` (buildah in an
   * unprivileged container) or `["--layers"]`.
   * @default []
   */
  buildArgs?: readonly string[];
  /** @default process.env */
  env?: NodeJS.ProcessEnv;
  /** The directory relative contexts are resolved against. @default process.cwd() */
  cwd?: string;
  /**
   * How long a cancelled build's process group gets between SIGTERM and SIGKILL.
   * @default 10000
   */
  graceMs?: number;
}

const payloadFields = new Set(["context", "tags", "dockerfile", "buildArgs", "target", "platform", "noCache"]);
const engines: readonly ImageBuildEngine[] = ["docker", "podman", "buildah"];

/**
 * Validates an `image-build` payload (the `docker.build` rules, with `tags` a non-empty array).
 * @throws {OrchestratorError} `invalid_argument` (never retried) naming the bad field.
 */
export function parseImageBuildPayload(payload: unknown): ImageBuildPayload {
  const input = checkPayloadFields(payload, payloadFields);
  if (!Array.isArray(input.tags) || input.tags.length === 0 || input.tags.length > 32) {
    throw invalidArgument("payload.tags", "a non-empty array of at most 32 image references", input.tags);
  }
  const { tags, ...rest } = input;
  // The docker.build rules check one tag at a time; every tag must pass them.
  const checked = (tags as unknown[]).map((tag, index) => {
    try {
      return parseDockerBuildPayload({ ...rest, tag }).tag;
    } catch (error) {
      const e = OrchestratorError.from(error);
      if (e.details.field === "payload.tag") throw invalidArgument(`payload.tags[${index}]`, "a Docker image reference such as `registry.example.com/team/app:1.2`", tag);
      throw e;
    }
  });
  const { tag: _tag, ...fields } = parseDockerBuildPayload({ ...rest, tag: checked[0] });
  return { ...fields, tags: checked };
}

/**
 * Creates a handler that builds a container image with docker (BuildKit), podman or buildah.
 *
 * The build output streams to `ctx.log` line by line; every build step reports `ctx.progress`
 * (`step 2/3: RUN make`, the share of steps begun); the result carries the image id, tags, size
 * and duration. `ctx.signal` kills the build's whole process group (SIGTERM, then SIGKILL after
 * `graceMs`), then removes what the build left behind: with buildah and podman the working
 * containers and untagged images that appeared in the storage while it ran (deferred until no
 * other build of this handler runs, so a concurrent build's containers are never touched); with
 * docker the daemon ends the build when its client goes, and `--force-rm` removes intermediate
 * containers.
 *
 * @throws {OrchestratorError} `invalid_argument` for a bad payload; `handler_failed` not
 * retryable when no engine is installed (`details.engine: "not_installed"`); `handler_failed`
 * with the exit code and the last output lines when the build fails.
 * @example
 * ```ts
 * await serveWorker({ handlers: { "image-build": createImageBuildHandler({ engine: "buildah", buildArgs: ["--isolation", "chroot"] }) } });
 * // then: client.submit({ type: "image-build", payload: { context: "/srv/app", tags: ["app:dev"] } })
 * ```
 */
export function createImageBuildHandler(
  options: ImageBuildHandlerOptions = {},
): (payload: ImageBuildPayload, ctx: JobContext) => Promise<ImageBuildResult> {
  checkObject("options", options);
  const engineOption = optional<ImageBuildEngine | "auto">(options.engine, "auto", (value) => {
    if (value !== "auto" && !engines.includes(value as ImageBuildEngine)) throw invalidArgument("engine", '"auto", "docker", "podman" or "buildah"', value);
    return value as ImageBuildEngine | "auto";
  });
  const commandOption = options.command === undefined ? undefined : checkString("command", options.command, 4096);
  const globalArgs = checkStrings("globalArgs", options.globalArgs);
  const extraBuildArgs = checkStrings("buildArgs", options.buildArgs);
  const env = optional(options.env, process.env, (value) => checkObject("env", value) as NodeJS.ProcessEnv);
  const cwd = optional(options.cwd, process.cwd(), (value) => checkString("cwd", value, 4096));
  const graceMs = optional(options.graceMs, 10_000, (value) => checkInteger("graceMs", value, 0));
  if (commandOption !== undefined && engineOption === "auto") throw invalidArgument("engine", "an engine name when `command` is given", engineOption);

  /** Runs the engine for a short query (not a build) and returns its stdout lines. */
  const query = async (engine: ImageBuildEngine, args: readonly string[], signal: AbortSignal): Promise<string[]> => {
    const lines: string[] = [];
    const result = await runProcess({
      command: commandOption ?? engine,
      args: [...globalArgs, ...args],
      cwd,
      env,
      signal,
      graceMs: 1000,
      onLine: (line, stream) => {
        if (stream === "stdout") lines.push(line);
      },
    });
    if (result.exitCode !== 0) {
      throw new OrchestratorError("handler_failed", `${engine} ${args[0] ?? ""} ${describeExit(result)}: ${result.stderrTail.slice(-3).join(" ")}`, { details: { exitCode: result.exitCode } });
    }
    return lines;
  };

  let detected: Promise<ImageBuildEngine> | undefined;
  const engineFor = (signal: AbortSignal): Promise<ImageBuildEngine> => {
    if (engineOption !== "auto") return Promise.resolve(engineOption);
    detected ??= detect().catch((error: unknown) => {
      detected = undefined; // an engine may be installed before the next job
      throw error;
    });
    return raceSignal(detected, signal);
  };
  const detect = async (): Promise<ImageBuildEngine> => {
    for (const engine of engines) {
      const probe = engine === "docker" ? ["version", "--format", "{{.Server.Version}}"] : ["version"];
      const ok = await runProcess({ command: engine, args: probe, cwd, env, signal: AbortSignal.timeout(15_000), graceMs: 1000 }).then(
        (result) => result.exitCode === 0,
        () => false,
      );
      if (ok) return engine;
    }
    throw new OrchestratorError("handler_failed", "no image build engine works on this worker: install docker (with a running daemon), podman or buildah", {
      retryable: false,
      details: { engine: "not_installed" },
    });
  };

  const leftovers = leftoverTracker((engine, containers, images) => removeLeftovers(engine, containers, images));
  async function removeLeftovers(engine: ImageBuildEngine, containers: readonly string[], images: readonly string[]): Promise<void> {
    const quiet = AbortSignal.timeout(60_000);
    const present = await snapshot(engine, quiet).catch(() => undefined);
    const gone = (ids: readonly string[], now: ReadonlySet<string> | undefined) => ids.filter((id) => now === undefined || now.has(id));
    const rmContainer = engine === "buildah" ? ["rm"] : ["rm", "--force"];
    for (const id of gone(containers, present?.containers)) await query(engine, [...rmContainer, id], quiet).catch(() => {});
    for (const id of gone(images, present?.images)) await query(engine, ["rmi", "--force", id], quiet).catch(() => {});
  }

  /** The working containers and untagged images in the engine's storage now (buildah, podman). */
  async function snapshot(engine: ImageBuildEngine, signal: AbortSignal): Promise<{ containers: Set<string>; images: Set<string> }> {
    const containerArgs = engine === "buildah" ? ["containers", "--quiet", "--notruncate"] : ["ps", "--all", "--external", "--quiet", "--no-trunc"];
    const imageArgs = engine === "buildah" ? ["images", "--all", "--quiet", "--no-trunc", "--filter", "dangling=true"] : ["images", "--all", "--quiet", "--no-trunc", "--filter", "dangling=true"];
    const [containers, images] = await Promise.all([query(engine, containerArgs, signal), query(engine, imageArgs, signal)]);
    return { containers: new Set(containers.filter(Boolean)), images: new Set(images.filter(Boolean)) };
  }

  return async (rawPayload: unknown, ctx: JobContext): Promise<ImageBuildResult> => {
    const payload = parseImageBuildPayload(rawPayload);
    const engine = await engineFor(ctx.signal);
    const scratch = await mkdtemp(join(tmpdir(), "blacktree-image-build-"));
    const build = leftovers.begin();
    try {
      const before = engine === "docker" ? undefined : await snapshot(engine, ctx.signal);
      const iidfile = join(scratch, "iid");
      const args = [...globalArgs, ...(engine === "buildah" ? ["bud"] : ["build"]), `--iidfile=${iidfile}`];
      for (const tag of payload.tags) args.push(`--tag=${tag}`);
      if (engine === "docker") args.push("--progress=plain", "--force-rm");
      if (payload.dockerfile !== undefined) args.push(`--file=${payload.dockerfile}`);
      if (payload.target !== undefined) args.push(`--target=${payload.target}`);
      if (payload.platform !== undefined) args.push(`--platform=${payload.platform}`);
      if (payload.noCache) args.push("--no-cache");
      for (const [name, value] of Object.entries(payload.buildArgs ?? {})) args.push(`--build-arg=${name}=${value}`);
      args.push(...extraBuildArgs, payload.context);

      const progress = stepProgress();
      const onLine = (line: string, stream: OutputStream) => {
        ctx.log(line, stream);
        const step = parseBuildStep(line);
        const update = step && progress.begin(step);
        if (update) ctx.progress(update.progress, update.message);
      };
      const command = commandOption ?? engine;
      let result;
      try {
        result = await runProcess({ command, args, cwd, env: engine === "docker" ? { ...env, DOCKER_BUILDKIT: env.DOCKER_BUILDKIT ?? "1" } : env, signal: ctx.signal, onLine, graceMs, tailLines: 15 });
      } catch (error) {
        if (before !== undefined && ctx.signal.aborted) {
          // The group is gone; what it left in the storage goes too.
          const after = await snapshot(engine, AbortSignal.timeout(60_000)).catch(() => undefined);
          if (after) build.leftOver(engine, [...after.containers].filter((id) => !before.containers.has(id)), [...after.images].filter((id) => !before.images.has(id)));
        }
        throw notInstalled(error, command) ?? error;
      }
      if (result.exitCode !== 0) {
        const tail = (result.stderrTail.length > 0 ? result.stderrTail : result.stdoutTail).slice(-5);
        throw new OrchestratorError("handler_failed", `${engine} build of ${payload.tags.join(", ")} ${describeExit(result)}${tail.length > 0 ? `:\n${tail.join("\n")}` : ""}`, {
          details: { exitCode: result.exitCode, signal: result.signalCode, tail },
        });
      }
      const imageId = (await readFile(iidfile, "utf8").catch(() => "")).trim();
      if (imageId === "") throw new OrchestratorError("handler_failed", `${engine} built ${payload.tags.join(", ")} but wrote no image id`);
      const sizeBytes = await imageSize(engine, imageId, (queryArgs) => query(engine, queryArgs, AbortSignal.timeout(30_000)));
      ctx.progress(1, `built ${payload.tags.join(", ")}`);
      return { imageId, tags: payload.tags, sizeBytes, durationMs: result.durationMs, engine };
    } finally {
      await rm(scratch, { recursive: true, force: true });
      await build.end();
    }
  };
}

/** The image's size in bytes; 0 when the engine does not say. */
async function imageSize(engine: ImageBuildEngine, imageId: string, query: (args: readonly string[]) => Promise<string[]>): Promise<number> {
  if (engine !== "buildah") {
    const [size] = await query(["image", "inspect", "--format", "{{.Size}}", imageId]).catch(() => [] as string[]);
    return Number(size) || 0;
  }
  const manifest = await query(["inspect", "--type", "image", "--format", "{{.Manifest}}", imageId]).catch(() => [] as string[]);
  try {
    const parsed = JSON.parse(manifest.join("\n")) as { layers?: Array<{ size?: number }> };
    return (parsed.layers ?? []).reduce((sum, layer) => sum + (layer.size ?? 0), 0);
  } catch {
    return 0;
  }
}

/**
 * Leftovers of cancelled builds are removed once no build of the handler runs: a container that
 * appeared while a cancelled build ran may belong to a concurrent build, which removes its own
 * when it ends; whatever is still there when none runs is a leftover.
 */
function leftoverTracker(remove: (engine: ImageBuildEngine, containers: readonly string[], images: readonly string[]) => Promise<void>) {
  let running = 0;
  const pending: Array<{ engine: ImageBuildEngine; containers: readonly string[]; images: readonly string[] }> = [];
  let removing: Promise<void> = Promise.resolve();
  return {
    begin() {
      running++;
      let ended = false;
      return {
        leftOver(engine: ImageBuildEngine, containers: readonly string[], images: readonly string[]) {
          pending.push({ engine, containers, images });
        },
        /** Resolves once this build's leftovers are removed (or handed to the last build still running). */
        end(): Promise<void> {
          if (ended) return removing;
          ended = true;
          running--;
          if (running > 0 || pending.length === 0) return removing;
          const batch = pending.splice(0);
          removing = removing.then(async () => {
            for (const entry of batch) await remove(entry.engine, entry.containers, entry.images);
          });
          return removing;
        },
      };
    },
  };
}

function checkStrings(field: string, value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.some((item) => typeof item !== "string")) throw invalidArgument(field, "an array of strings", value);
  return [...(value as string[])];
}

/** "The engine binary is missing" as the clear error; undefined for anything else. */
function notInstalled(error: unknown, command: string): OrchestratorError | undefined {
  if (error instanceof OrchestratorError && error.details.errno === "ENOENT" && error.details.cwd === undefined) {
    return new OrchestratorError("handler_failed", `\`${command}\` is not installed on this worker (install it or set the handler's \`command\` option)`, {
      retryable: false,
      cause: error,
      details: { engine: "not_installed" },
    });
  }
  return undefined;
}

