/**
 * The console's web page in a real browser (Debian's Chromium driven by playwright-core, never a
 * downloaded one) against a real orchestrator: a Dispatcher on RabbitMQ with the PostgreSQL job
 * store, two gRPC worker processes, a PoolReporter on the broker, and `createConsole()` mounted
 * under a prefix of a plain `node:http` server, serving the page exactly as the build ships it.
 *
 * One browser and one orchestrator serve every case. Screenshots of each view at 1280×800 and
 * 390×844 go to `.scratch/console-screenshots/`, or to `docs/console/` (the committed ones the
 * README shows) with `CONSOLE_SCREENSHOTS=docs`.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import type { Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AxeBuilder } from "@axe-core/playwright";
import { chromium } from "playwright-core";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { buildConsolePage } from "../../scripts/console-page.ts";
import { JobClient } from "../../src/client/job-client.ts";
import { AmqpPoolBus, createConsole, PoolReporter } from "../../src/console/index.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { HealthMonitor } from "../../src/health/health-monitor.ts";
import { AmqpConnection, AmqpEvents, AmqpQueue } from "../../src/queue/amqp/index.ts";
import { PostgresJobStore } from "../../src/store/postgres/postgres-job-store.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import type { AbortMarker } from "../../src/testing/contract-handlers.ts";
import { GrpcTransport } from "../../src/transport/grpc/grpc-transport.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { consoleUiHandlersModule } from "../helpers/console-ui-handlers.ts";
import { usePostgres } from "../helpers/postgres.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";
import { startWorkerProcess } from "../helpers/worker-process.ts";
import type { WorkerProcess } from "../helpers/worker-process.ts";

const CHROMIUM = "/usr/bin/chromium";
const SCHEMA = "t_console_ui";
const PREFIX = "/ops/console";
const READ_ONLY_PREFIX = "/ops/read-only";
/** A console over a store whose `redactPayload` hook hides `token` fields in the records. */
const REDACTING_PREFIX = "/ops/redacting";
const root = join(import.meta.dirname, "..", "..");
const screenshotDir = process.env.CONSOLE_SCREENSHOTS === "docs" ? join(root, "docs", "console") : join(root, ".scratch", "console-screenshots");

const rabbit = await useRabbitMq();
const postgres = await usePostgres();
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) {
  if (process.env.CI === "true") throw new Error(`${CHROMIUM} is missing: the console's browser tests cannot run (apt-get install chromium; .ci/run does it)`);
  console.warn(`\n⚠️  ${CHROMIUM} is missing: SKIPPING the console's browser tests (apt-get install chromium)\n`);
}

describe.skipIf(!rabbit.available || !postgres.available || !hasChromium)("the console page in a real browser", () => {
  const tmp = mkdtempSync(join(tmpdir(), "console-ui-"));
  const workers: WorkerProcess[] = [];
  const workerIds = ["w-left", "w-right"] as const;
  /** The job whose cancel the authorize hook refuses (the page must show the refusal). */
  let refusedJobId = "";
  let connection: AmqpConnection;
  let queue: AmqpQueue;
  let events: AmqpEvents;
  let store: PostgresJobStore;
  let redactingStore: PostgresJobStore;
  let queueName = "";
  let pool: WorkerPool;
  let health: HealthMonitor;
  let dispatcher: Dispatcher;
  let client: JobClient;
  let bus: AmqpPoolBus;
  let reporter: PoolReporter;
  let consoles: Array<ReturnType<typeof createConsole>>;
  let server: Server;
  let base: string;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  /** Content-Security-Policy violations and uncaught errors the page reported. */
  const problems: string[] = [];
  /** Jobs that wait for their signal: cancelled after each case, so a failed case leaves no slot taken. */
  const waiting: Array<{ id: string; cancel(reason: "requested"): Promise<unknown> }> = [];
  const submitWaiting = async (payload: { marker?: string }, metadata?: Record<string, string>) => {
    const handle = await client.submit({ type: "waitForAbort", payload, ...(metadata ? { metadata } : {}) });
    waiting.push(handle);
    return handle;
  };
  afterEach(async () => {
    for (const handle of waiting.splice(0)) {
      const state = (await store.get(handle.id))?.state;
      if (state !== "completed" && state !== "failed" && state !== "cancelled") await handle.cancel("requested");
    }
  });

  beforeAll(async () => {
    await postgres.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
    const [uiDir, ...started] = await Promise.all([
      buildConsolePage(join(tmp, "page")),
      ...workerIds.map(() => startWorkerProcess({ handlersModule: consoleUiHandlersModule, handlersExport: "consoleUiHandlers", slots: 1 })),
    ]);
    workers.push(...(started as WorkerProcess[]));

    queueName = rabbit.queueName("console-ui");
    connection = new AmqpConnection({ url: rabbit.url });
    queue = new AmqpQueue({ connection, queueName });
    events = new AmqpEvents({ connection, queueName });
    store = new PostgresJobStore({ connectionString: postgres.url, schema: SCHEMA });
    await store.migrate();
    redactingStore = new PostgresJobStore({
      connectionString: postgres.url, schema: SCHEMA,
      redactPayload: (payload) => (typeof payload === "object" && payload !== null && "token" in payload ? { ...payload, token: "***" } : payload),
    });
    pool = new WorkerPool();
    workers.forEach((worker, i) => pool.add({ id: workerIds[i]!, transport: new GrpcTransport({ address: worker.address }) }));
    health = new HealthMonitor({ target: pool, intervalMs: 500, timeoutMs: 2000 });
    dispatcher = new Dispatcher({ queue, events, pool, store, retry: { baseDelayMs: 100, maxDelayMs: 500 } });
    client = new JobClient({ queue, events, store, defaults: { timeoutMs: 60_000 } });
    bus = new AmqpPoolBus({ connection, queueName });
    reporter = new PoolReporter({ pool, bus, intervalMs: 500 });
    health.start();
    await dispatcher.start();
    await reporter.start();
    await waitFor(() => pool.list().every((w) => w.state === "idle"), { timeoutMs: 20_000, what: "both workers admitted" });

    const options = { queue, events, store, poolBus: bus, uiDir: uiDir as string };
    consoles = [
      createConsole({
        ...options,
        basePath: PREFIX,
        identify: () => "e2e-operator",
        authorize: (_request, action) => !(action.kind === "cancel" && action.target === refusedJobId),
      }),
      createConsole({ ...options, basePath: READ_ONLY_PREFIX }),
      createConsole({ ...options, store: redactingStore, basePath: REDACTING_PREFIX, identify: () => "e2e-operator", authorize: () => true }),
    ];
    server = createServer((req, res) => {
      const [main, readOnly, redacting] = consoles;
      if (req.url?.startsWith(PREFIX)) return main!(req, res);
      if (req.url?.startsWith(READ_ONLY_PREFIX)) return readOnly!(req, res);
      if (req.url?.startsWith(REDACTING_PREFIX)) return redacting!(req, res);
      res.statusCode = 404;
      res.end("not the console");
    });
    await Promise.all(consoles.map((c) => c.ready()));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    base = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;

    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"], headless: true });
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
    page.on("console", (message) => {
      // A refused action's 403 is expected (the page explains it), and so is the 400 of a submit
      // the form test makes the server refuse (the page marks the field); anything else is a problem.
      const expected = message.text().includes("status of 403") || (message.text().includes("status of 400") && message.location().url.endsWith(`${PREFIX}/api/jobs`));
      if (message.type() === "error" && !expected) problems.push(`console: ${message.text()} (${message.location().url})`);
    });
    // (Code run in the page is given as text: this file compiles without the DOM's types.)
    await page.addInitScript(`document.addEventListener("securitypolicyviolation", (e) => console.error("CSP violation: " + e.violatedDirective + " " + e.blockedURI))`);
    await page.goto(`${base}${PREFIX}/`);
    await waitFor(async () => (await page.locator("#live-status").textContent()) === "Live", { timeoutMs: 15_000, what: "the page's live stream open" });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    if (server) await new Promise((resolve) => server.close(resolve));
    for (const c of consoles ?? []) await c.close();
    await reporter?.close();
    await dispatcher?.close({ signal: AbortSignal.timeout(5000) });
    await health?.close();
    await client?.close();
    await pool?.close();
    await bus?.close();
    await events?.close();
    await queue?.close();
    await connection?.close();
    await store?.close();
    await redactingStore?.close();
    for (const worker of workers) await worker.stop();
    await postgres.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
    await rabbit.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  }, 60_000);

  /** Navigates within the page (hash routing: no reload) and waits for the view's heading. */
  async function show(hash: string, heading: string | RegExp): Promise<void> {
    await page.evaluate(`location.hash = ${JSON.stringify(hash)}`);
    await page
      .getByRole("heading", { level: 1, name: heading })
      .waitFor({ timeout: 15_000 })
      .catch(async (error: unknown) => {
        throw new Error(`${hash} did not show its heading; the page shows: ${await page.locator("main").innerText()}`, { cause: error });
      });
  }

  /** A value on `window` survives only as long as the document: proof that nothing reloaded. */
  async function markDocument(): Promise<void> {
    await page.evaluate("window.__sameDocument = true");
  }
  async function sameDocument(): Promise<boolean> {
    return (await page.evaluate("window.__sameDocument === true")) as boolean;
  }

  it("shows a job submitted elsewhere without a reload, and its progress moves", async () => {
    await show("#/jobs", "Jobs");
    await markDocument();
    const handle = await client.submit({ type: "steps", payload: { steps: 20, stepMs: 150 } });
    const row = page.locator(`tr[data-key="${handle.id}"]`);
    await row.waitFor({ timeout: 15_000 });
    const percent = async () => Number((await row.locator("progress").getAttribute("value").catch(() => null)) ?? -1);
    const first = await waitFor(async () => {
      const p = await percent();
      return p > 0 && p < 100 ? p : false;
    }, { timeoutMs: 15_000, what: "progress shown in the row" });
    await waitFor(async () => (await percent()) > first, { timeoutMs: 15_000, what: "the progress moved" });
    await expect.poll(() => row.locator(".badge").first().textContent(), { timeout: 20_000 }).toBe("completed");
    expect(await sameDocument()).toBe(true);
  });

  it("submits a job from the form and follows its log on the job's page", async () => {
    await show("#/jobs/new", "Submit a job");
    await markDocument();
    await page.getByLabel("Type").fill("steps");
    await page.getByLabel("Payload (JSON)").fill(JSON.stringify({ steps: 4, stepMs: 200 }));
    await page.getByLabel("Metadata (key=value, one a line)").fill("origin=e2e-form");
    await page.getByLabel("Timeout (ms)", { exact: true }).fill("60000");
    await page.getByRole("button", { name: "Submit job" }).click();
    await page.getByRole("heading", { level: 1, name: /^Job / }).waitFor();
    const id = decodeURIComponent(new URL(page.url()).hash.replace("#/jobs/", ""));
    await expect.poll(() => page.locator(".log li").allTextContents(), { timeout: 20_000 }).toContainEqual(expect.stringContaining("step 4 of 4"));
    await expect.poll(() => page.locator(".defs .badge").first().textContent(), { timeout: 20_000 }).toBe("completed");
    expect((await store.get(id))?.metadata).toEqual({ origin: "e2e-form" });
    expect(await sameDocument()).toBe(true);
  });

  it("submits a delayed job with priority and labels from the form, showing each refused field beside its input", async () => {
    await show("#/jobs/new", "Submit a job");
    await page.getByLabel("Type", { exact: true }).fill("echo");
    await page.getByLabel("Payload (JSON)").fill(JSON.stringify({ from: "form" }));
    await page.getByLabel("Labels a worker must carry (key=value, one a line)").fill("region");
    await page.getByRole("button", { name: "Submit job" }).click();
    // Checked in the page: a label line without `=`.
    const labels = page.getByLabel("Labels a worker must carry (key=value, one a line)");
    await expect.poll(() => labels.getAttribute("aria-invalid")).toBe("true");
    expect(await page.locator("#error-labels").textContent()).toContain('got "region"');
    await labels.fill("region=eu");
    await page.getByLabel("Priority").selectOption("1");
    // Checked by the server (JobClient.submit's own rule): more than 90 days ahead.
    await page.getByLabel("Delay (ms)").fill(String(91 * 24 * 3_600_000));
    await page.getByRole("button", { name: "Submit job" }).click();
    const delay = page.getByLabel("Delay (ms)");
    await expect.poll(() => delay.getAttribute("aria-invalid")).toBe("true");
    expect(await page.locator("#error-delayMs").textContent()).toContain("delayMs");
    expect(await labels.getAttribute("aria-invalid")).toBeNull();
    expect(await page.evaluate("document.activeElement?.getAttribute('name')")).toBe("delayMs");
    await delay.fill("600000");
    await page.getByRole("button", { name: "Submit job" }).click();
    await page.getByRole("heading", { level: 1, name: /^Job / }).waitFor();
    const id = decodeURIComponent(new URL(page.url()).hash.replace("#/jobs/", ""));
    await expect.poll(() => page.locator(".defs .badge").first().textContent(), { timeout: 15_000 }).toBe("scheduled");
    const record = await store.get(id);
    expect(record).toMatchObject({ state: "scheduled", priority: 1, labels: { region: "eu" }, payload: { from: "form" } });
    expect(record!.runAt! - record!.createdAt).toBeGreaterThanOrEqual(600_000);
    await page.getByRole("button", { name: "Cancel job…" }).click();
    await page.getByRole("dialog").getByLabel(/Reason/).fill("only a form test");
    await page.getByRole("dialog").getByRole("button", { name: "Cancel job" }).click();
    await expect.poll(() => page.locator(".defs .badge").first().textContent(), { timeout: 15_000 }).toBe("cancelled");
  });

  it("offers no retry of a job whose record holds a redacted payload, and says why", async () => {
    const other = await context.newPage();
    try {
      await other.goto(`${base}${REDACTING_PREFIX}/#/jobs/new`);
      await other.getByRole("heading", { level: 1, name: "Submit a job" }).waitFor();
      await other.getByLabel("Type", { exact: true }).fill("echo");
      await other.getByLabel("Payload (JSON)").fill(JSON.stringify({ token: "hunter2" }));
      await other.getByLabel("Delay (ms)").fill("600000");
      await other.getByRole("button", { name: "Submit job" }).click();
      await other.getByRole("heading", { level: 1, name: /^Job / }).waitFor();
      expect(await other.locator('[data-testid="payload"]').textContent()).toContain('"***"');
      await other.getByRole("button", { name: "Cancel job…" }).click();
      await other.getByRole("dialog").getByLabel(/Reason/).fill("to see the retry");
      await other.getByRole("dialog").getByRole("button", { name: "Cancel job" }).click();
      await expect.poll(() => other.locator(".defs .badge").first().textContent(), { timeout: 15_000 }).toBe("cancelled");
      await other.locator('[data-testid="no-retry"]').waitFor();
      expect(await other.locator('[data-testid="no-retry"]').textContent()).toContain("redacted copy");
      expect(await other.getByRole("button", { name: "Retry as a new job" }).count()).toBe(0);
      // A bulk retry over it counts it out before anything runs.
      const id = decodeURIComponent(new URL(other.url()).hash.replace("#/jobs/", ""));
      await other.evaluate(`location.hash = ${JSON.stringify(`#/jobs?idPrefix=${encodeURIComponent(id)}`)}`);
      await other.locator(`tr[data-key="${id}"]`).waitFor({ timeout: 15_000 });
      await other.getByRole("button", { name: "Retry all matching…" }).click();
      await other.locator("#toasts").filter({ hasText: "1 left out" }).waitFor({ timeout: 15_000 });
      expect(await other.getByRole("dialog").count()).toBe(0);
    } finally {
      await other.close();
    }
  });

  it("cancels a running job from its page: the handler's signal fires on its worker process", async () => {
    const marker = join(tmp, "cancel-marker.json");
    const handle = await submitWaiting({ marker });
    await show(`#/jobs/${handle.id}`, /^Job /);
    await expect.poll(() => page.locator(".defs .badge").first().textContent(), { timeout: 15_000 }).toBe("running");
    await page.getByRole("button", { name: "Cancel job…" }).click();
    await page.getByRole("dialog").getByLabel(/Reason/).fill("stuck in e2e");
    await page.getByRole("dialog").getByRole("button", { name: "Cancel job" }).click();
    const fired = await waitFor(() => existsSync(marker) && (JSON.parse(readFileSync(marker, "utf8")) as AbortMarker), { timeoutMs: 15_000, what: "the worker's abort marker" });
    expect(fired).toMatchObject({ jobId: handle.id, code: "canceled", reason: "requested" });
    await expect.poll(() => page.locator(".defs .badge").first().textContent(), { timeout: 15_000 }).toBe("cancelled");
    await show("#/audit", "Audit log");
    await expect.poll(() => page.locator("tbody tr").filter({ hasText: handle.id }).filter({ hasText: "cancel" }).first().textContent(), { timeout: 15_000 }).toContain("e2e-operator");
  });

  it("filters jobs by metadata, saves the filter, and cancels every match after showing the count", async () => {
    const batch = `b${Date.now()}`;
    const handles = await Promise.all([1, 2, 3].map(() => submitWaiting({}, { batch })));
    await client.submit({ type: "echo", payload: { unrelated: true } });
    await show("#/jobs", "Jobs");
    await page.getByText("Filter and search").click();
    await page.getByLabel("Metadata (key=value, one a line)").fill(`batch=${batch}`);
    await page.getByRole("button", { name: "Apply filter" }).click();
    await expect.poll(() => page.locator("tbody tr").count(), { timeout: 15_000 }).toBe(3);
    expect(new URL(page.url()).hash).toContain(`meta.batch=${batch}`);

    await page.getByLabel("Save this filter as").fill(`batch ${batch}`);
    await page.getByRole("button", { name: "Save", exact: true }).click();
    await page.getByRole("link", { name: `batch ${batch}` }).waitFor();

    await page.getByRole("button", { name: "Cancel all matching…" }).click();
    const dialog = page.getByRole("dialog");
    expect(await dialog.getByRole("heading").textContent()).toBe("Cancel 3 jobs?");
    await dialog.getByLabel(/Reason/).fill("bulk in e2e");
    await dialog.getByRole("button", { name: "Cancel 3" }).click();
    for (const handle of handles) {
      await waitFor(async () => (await store.get(handle.id))?.state === "cancelled", { timeoutMs: 20_000, what: `job ${handle.id} cancelled` });
    }
    await expect.poll(() => page.locator("tbody .badge").allTextContents(), { timeout: 15_000 }).toEqual(["cancelled", "cancelled", "cancelled"]);
  });

  it("redrives a dead letter from the page, and the job runs again", async () => {
    const handle = await client.submit({ type: "failOnce", payload: { marker: join(tmp, "fail-once") } });
    await waitFor(async () => (await store.get(handle.id))?.deadLetter !== undefined, { timeoutMs: 20_000, what: "the job dead-lettered" });
    await show("#/dead-letters", "Dead letters");
    const row = page.locator(`tr[data-key="${handle.id}"]`);
    await row.waitFor({ timeout: 15_000 });
    expect(await row.textContent()).toContain("the first run fails for good");
    await row.getByRole("button", { name: `Redrive job ${handle.id}` }).click();
    const record = await waitFor(async () => {
      const r = await store.get(handle.id);
      return r?.state === "completed" && r;
    }, { timeoutMs: 20_000, what: "the redriven job completed" });
    expect(record.result).toEqual({ ranAgain: true, attempt: 1 });
    expect(record.redrives).toBe(1);
    await row.waitFor({ state: "detached", timeout: 15_000 });
  });

  it("lists the dead letters that are not jobs, as text, and discards one", async () => {
    const marker = `forged-${Date.now()}`;
    const hostile = `{"id":"${marker}", <script>window.__injected = 3</script>`;
    await rabbit.publishRaw(queueName, new TextEncoder().encode(hostile));
    await rabbit.publishRaw(queueName, new TextEncoder().encode(`kept-${marker} (not JSON at all)`));
    await show("#/dead-letters", "Dead letters");
    const section = page.getByRole("region", { name: "Messages that are not jobs" });
    const row = section.locator("tbody tr").filter({ hasText: marker }).filter({ hasText: "<script>" });
    await expect.poll(async () => {
      await page.evaluate(`location.hash = "#/overview"`);
      await show("#/dead-letters", "Dead letters");
      return row.count();
    }, { timeout: 20_000 }).toBe(1);
    expect(await row.locator('[data-testid="message-body"]').textContent()).toContain(hostile);
    expect(await row.locator("script").count()).toBe(0);
    const before = await rabbit.messageCount(`${queueName}.dead`);
    await row.getByRole("button", { name: /^Discard message / }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Discard" }).click();
    await row.waitFor({ state: "detached", timeout: 15_000 });
    expect(await section.locator("tbody tr").filter({ hasText: `kept-${marker}` }).count()).toBe(1);
    expect(await rabbit.messageCount(`${queueName}.dead`)).toBe(before - 1);
    expect(await page.evaluate("typeof window.__injected")).toBe("undefined");
  });

  it("drains a worker: it finishes its job, takes no new one, and shows empty; undrain brings it back", async () => {
    const long = await client.submit({ type: "steps", payload: { steps: 8, stepMs: 250 } });
    const running = await waitFor(async () => {
      const r = await store.get(long.id);
      return r?.state === "running" && r.attempts.at(-1)?.workerId;
    }, { timeoutMs: 15_000, what: "the long job running" });
    const other = workerIds.find((id) => id !== running)!;
    await show("#/workers", "Workers");
    const row = page.locator(`tr[data-key="${running}"]`);
    await row.getByRole("button", { name: `Drain worker ${running}` }).click();
    await expect.poll(() => row.locator(".badge").first().textContent(), { timeout: 15_000 }).toBe("draining");
    const next = await client.submit({ type: "echo", payload: { after: "drain" } });
    const nextRecord = await waitFor(async () => {
      const r = await store.get(next.id);
      return r?.state === "completed" && r;
    }, { timeoutMs: 20_000, what: "the job submitted after the drain completed" });
    expect(nextRecord.attempts.map((a) => a.workerId)).toEqual([other]);
    await waitFor(async () => (await store.get(long.id))?.state === "completed", { timeoutMs: 20_000, what: "the drained worker's job completed" });
    await expect.poll(() => row.locator('td[data-label="Slots"]').textContent(), { timeout: 15_000 }).toBe("0 busy of 1");
    expect(await row.locator('td[data-label="Running"]').textContent()).toBe("—");
    await row.getByRole("button", { name: `Undrain worker ${running}` }).click();
    await expect.poll(() => row.locator(".badge").first().textContent(), { timeout: 15_000 }).toBe("idle");
  });

  it("shows a payload holding <script> as text, and runs nothing of it", async () => {
    const hostile = "<script>window.__injected = 1</script><img src=x onerror=window.__injected=2>";
    const handle = await client.submit({ type: "echo", payload: { note: hostile } });
    await show(`#/jobs/${handle.id}`, /^Job /);
    const payload = page.locator('[data-testid="payload"]');
    expect(await payload.textContent()).toContain(hostile);
    expect(await payload.locator("script, img").count()).toBe(0);
    await expect.poll(() => page.locator(".defs .badge").first().textContent(), { timeout: 15_000 }).toBe("completed");
    expect(await page.evaluate("typeof window.__injected")).toBe("undefined");
    expect(problems).toEqual([]);
  });

  it("explains a refused action (403), and a read-only console disables every action with a notice", async () => {
    const marker = join(tmp, "refused-marker.json");
    const handle = await submitWaiting({ marker });
    refusedJobId = handle.id;
    await show(`#/jobs/${handle.id}`, /^Job /);
    await page.getByRole("button", { name: "Cancel job…" }).click();
    await page.getByRole("dialog").getByLabel(/Reason/).fill("not mine to cancel");
    await page.getByRole("dialog").getByRole("button", { name: "Cancel job" }).click();
    await page.getByRole("alert").filter({ hasText: "refused (403" }).waitFor();
    expect(existsSync(marker)).toBe(false);

    const readOnly = await context.newPage();
    await readOnly.goto(`${base}${READ_ONLY_PREFIX}/#/jobs/${handle.id}`);
    await readOnly.getByRole("heading", { level: 1, name: /^Job / }).waitFor();
    expect(await readOnly.locator("#notice").textContent()).toContain("Read-only");
    expect(await readOnly.getByRole("button", { name: "Cancel job…" }).isDisabled()).toBe(true);
    // The page's own request, without the CSRF token, is refused as well.
    const status = await readOnly.evaluate(async (id) => (await fetch(`api/jobs/${id}/cancel`, { method: "POST", body: "{}" })).status, handle.id);
    expect(status).toBe(403);
    await readOnly.goto(`${base}${READ_ONLY_PREFIX}/#/workers`);
    await readOnly.getByRole("heading", { level: 1, name: "Workers" }).waitFor();
    await expect.poll(() => readOnly.getByRole("button", { name: /^(Drain|Undrain) worker/ }).count(), { timeout: 15_000 }).toBe(2);
    const drains = await readOnly.getByRole("button", { name: /^(Drain|Undrain) worker/ }).all();
    for (const button of drains) expect(await button.isDisabled()).toBe(true);
    await readOnly.close();
  });

  it("every view: no serious or critical axe violation, no horizontal overflow at 1280×800 and 390×844", async () => {
    // A job to show, and a dead letter, so the screenshots show the views with something in them.
    const job = await client.submit({ type: "steps", payload: { steps: 2, stepMs: 50, note: "a payload to show" }, metadata: { team: "web" } });
    const dead = await client.submit({ type: "failOnce", payload: { marker: join(tmp, "fail-once-shown") } });
    await waitFor(async () => (await store.get(job.id))?.state === "completed", { timeoutMs: 20_000, what: "the sample job completed" });
    await waitFor(async () => (await store.get(dead.id))?.deadLetter !== undefined, { timeoutMs: 20_000, what: "the sample dead letter" });
    // `ready`: what shows once the view's data arrived (its heading comes first), so axe and the
    // screenshot see the view, not its loading state.
    const views = [
      { name: "overview", hash: "#/overview", heading: "Overview", ready: ".stats" },
      { name: "jobs", hash: "#/jobs", heading: "Jobs", ready: "main tbody tr" },
      { name: "job", hash: `#/jobs/${job.id}`, heading: /^Job /, ready: "main .defs" },
      { name: "submit", hash: "#/jobs/new", heading: "Submit a job", ready: "form.submit-form" },
      { name: "workers", hash: "#/workers", heading: "Workers", ready: "main tbody tr" },
      { name: "worker", hash: `#/workers/${workerIds[0]}`, heading: /^Worker /, ready: "main .defs" },
      { name: "dead-letters", hash: "#/dead-letters", heading: "Dead letters", ready: ".invalid-dead-letters table, .invalid-dead-letters .empty" },
      { name: "audit", hash: "#/audit", heading: "Audit log", ready: "main tbody tr" },
    ];
    mkdirSync(screenshotDir, { recursive: true });
    const found: string[] = [];
    for (const viewport of [{ width: 1280, height: 800 }, { width: 390, height: 844 }]) {
      await page.setViewportSize(viewport);
      for (const view of views) {
        await show(view.hash, view.heading);
        await page.locator(view.ready).first().waitFor({ timeout: 15_000 });
        const [scrollWidth, clientWidth] = (await page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")) as [number, number];
        expect(scrollWidth, `${view.name} at ${viewport.width}px overflows sideways`).toBeLessThanOrEqual(clientWidth);
        // axe costs 2-3 s a run on this machine, so it checks each view once, at the size where its
        // tables stack into labelled cards (the same elements as on a desktop, restyled). Legacy
        // mode runs it in this page alone (the page has no frames) instead of opening a second page
        // per run: a third of the time, the same rules.
        if (viewport.width === 390) {
          const results = await new AxeBuilder({ page }).setLegacyMode(true).analyze();
          for (const v of results.violations) {
            if (v.impact === "serious" || v.impact === "critical") found.push(`${view.name}: ${v.id} (${v.impact}) ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
          }
        }
        await page.evaluate(`document.getElementById("toasts").replaceChildren()`);
        await page.screenshot({ path: join(screenshotDir, `${view.name}-${viewport.width}.png`) });
      }
    }
    expect(found).toEqual([]);
    await page.setViewportSize({ width: 1280, height: 800 });
    expect(problems).toEqual([]);
  });
});
