import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { OrchestratorError } from "../../src/errors.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { GrpcTransport } from "../../src/transport/grpc/index.ts";
import { createImageBuildHandler } from "../../src/worker/handlers/image-build.ts";
import type { ImageBuildResult } from "../../src/worker/handlers/image-build.ts";
import { serveWorker } from "../../src/worker/serve-worker.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { fakeJobContext } from "../helpers/job-context.ts";

const run = promisify(execFile);
const busybox = ["/bin/busybox", "/usr/bin/busybox"].find((path) => existsSync(path));
const buildah = ["/usr/bin/buildah", "/usr/local/bin/buildah"].find((path) => existsSync(path));
const missing = buildah === undefined || busybox === undefined;
if (missing) {
  const message = "image-build tests need buildah and a static busybox (apt-get install -y buildah busybox-static)";
  if (process.env.CI === "true") throw new Error(message);
  console.warn(`SKIPPING: ${message}`);
}

// Real builds with buildah, no daemon: vfs storage and chroot isolation work in an unprivileged
// container; the image is FROM scratch with a static busybox, so nothing is downloaded. Each test
// file has its own storage root, so builds of parallel runs never meet.
describe.skipIf(missing)("the image-build handler with buildah", () => {
  let dir: string;
  let storage: string[];
  let context: string;

  const buildahIn = async (...args: string[]) => (await run("buildah", [...storage, ...args], { timeout: 60_000 })).stdout;
  // graceMs 0: SIGKILL at once, as when a build ignores SIGTERM; buildah cannot clean up after itself then.
  const handler = () => createImageBuildHandler({ engine: "buildah", globalArgs: storage, buildArgs: ["--isolation", "chroot"], graceMs: 0 });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "blacktree-image-build-test-"));
    storage = ["--root", join(dir, "root"), "--runroot", join(dir, "runroot"), "--storage-driver", "vfs"];
    context = join(dir, "context");
    await mkdir(context);
    await copyFile(busybox as string, join(context, "busybox"));
    await writeFile(
      join(context, "Dockerfile"),
      ["FROM scratch", "COPY busybox /bin/busybox", 'RUN ["/bin/busybox", "sh", "-c", "echo built by blacktree > /hello"]', ""].join("\n"),
    );
    await writeFile(join(context, "Dockerfile.slow"), ["FROM scratch", "COPY busybox /bin/busybox", 'RUN ["/bin/busybox", "sleep", "30"]', ""].join("\n"));
  });

  afterAll(async () => {
    if (dir === undefined) return;
    // vfs layers may be read-only for the owner; buildah removes its own storage best.
    await run("buildah", [...storage, "rmi", "--all", "--force"]).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  });

  it("builds a three-step image through the whole path, reports steps 1/3, 2/3, 3/3 to the JobHandle, and buildah lists it", async () => {
    const worker = await serveWorker({ handlers: { "image-build": handler() }, host: "127.0.0.1", handleSignals: false });
    const queue = new MemoryQueue();
    const pool = new WorkerPool();
    pool.add({ id: "builder", transport: new GrpcTransport({ address: worker.address }) });
    const dispatcher = new Dispatcher({ queue, events: queue, pool });
    const client = new JobClient({ queue, events: queue });
    try {
      await dispatcher.start();
      const handle = await client.submit({ type: "image-build", payload: { context, tags: ["localhost/blacktree-test:three-steps", "localhost/blacktree-test:latest"] }, timeoutMs: 120_000 });
      const progress: Array<{ progress: number; message?: string }> = [];
      handle.on("progress", ({ progress: value, message }) => progress.push({ progress: value, message }));
      const logs: string[] = [];
      handle.on("log", ({ line }) => logs.push(line));
      const result = (await handle.result({ timeoutMs: 120_000 })) as ImageBuildResult;

      const steps = progress.map((p) => /^step (\d\/\d)/.exec(p.message ?? "")?.[1]).filter(Boolean);
      expect(steps).toEqual(["1/3", "2/3", "3/3"]);
      expect(progress.map((p) => p.progress)).toEqual([0, 1 / 3, 2 / 3, 1]);
      expect(progress.at(-1)?.message).toMatch(/^built /);
      expect(logs).toContain("STEP 3/3: RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo built by blacktree > /hello\"]");
      expect(result).toMatchObject({ engine: "buildah", tags: ["localhost/blacktree-test:three-steps", "localhost/blacktree-test:latest"] });
      expect(result.imageId).toMatch(/^(sha256:)?[0-9a-f]{64}$/);
      expect(result.sizeBytes).toBeGreaterThan(500_000);
      expect(result.durationMs).toBeGreaterThan(0);

      const images = JSON.parse(await buildahIn("images", "--json", "--no-trunc")) as Array<{ id: string; names: string[] | null }>;
      const built = images.find((image) => result.imageId.endsWith(image.id.replace(/^sha256:/, "")));
      expect(built?.names).toEqual(expect.arrayContaining(["localhost/blacktree-test:three-steps", "localhost/blacktree-test:latest"]));
      // The image holds what its RUN step wrote.
      const container = (await buildahIn("from", "localhost/blacktree-test:three-steps")).trim();
      try {
        expect((await buildahIn("run", "--isolation", "chroot", container, "/bin/busybox", "cat", "/hello")).trim()).toBe("built by blacktree");
      } finally {
        await buildahIn("rm", container);
      }
    } finally {
      await dispatcher.close();
      await client.close();
      await pool.close();
      await queue.close();
      await worker.close();
    }
  });

  it("stops a build cancelled during RUN sleep 30, leaving no build process and no working container", async () => {
    const order: string[] = [];
    const { ctx, controller } = fakeJobContext({
      type: "image-build",
      deadline: Date.now() + 120_000,
      progress: (_value, message) => {
        order.push(`progress ${message}`);
        // The RUN step has begun: its process is running now.
        if (message?.startsWith("step 3/3")) setTimeout(() => controller.abort(new OrchestratorError("canceled", "build cancelled by the test", { details: { reason: "requested" } })), 300);
      },
    });
    const containersBefore = (await buildahIn("containers", "--quiet", "--notruncate")).trim();
    const build = handler()({ context, dockerfile: join(context, "Dockerfile.slow"), tags: ["localhost/blacktree-test:never"] }, ctx).then(
      () => "resolved",
      (error: unknown) => (error as OrchestratorError).code,
    );
    const outcome = await build;
    order.push(`ended ${outcome}`);
    expect(order).toEqual(["progress step 1/3: FROM scratch", "progress step 2/3: COPY busybox /bin/busybox", 'progress step 3/3: RUN ["/bin/busybox", "sleep", "30"]', "ended canceled"]);
    expect(controller.signal.aborted).toBe(true);
    // Nothing of the build is left: no process running from its storage, no working container, no image.
    expect(await processesUsing(dir)).toEqual([]);
    expect((await buildahIn("containers", "--quiet", "--notruncate")).trim()).toBe(containersBefore);
    expect(await buildahIn("images", "--format", "{{.Name}}:{{.Tag}}")).not.toContain("blacktree-test:never");
  });
});

/** Processes whose command line names `dir`, or whose root or working directory lies under it (a chrooted RUN step). */
async function processesUsing(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    try {
      const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).replaceAll("\0", " ");
      const root = await readlink(`/proc/${pid}/root`).catch(() => "");
      const cwd = await readlink(`/proc/${pid}/cwd`).catch(() => "");
      if (cmdline.includes(dir) || root.startsWith(dir) || cwd.startsWith(dir)) found.push(`${pid} ${cmdline}`);
    } catch {
      // It exited while we looked.
    }
  }
  return found;
}
