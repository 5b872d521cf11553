import { create } from "@bufbuild/protobuf";
import { Client, credentials, Metadata } from "@grpc/grpc-js";
import { OrchestratorError } from "../errors.ts";
import { ExecuteRequestSchema, type ExecuteResponse, SessionRequestSchema, type SessionRequest, type SessionResponse } from "../gen/blacktree/orchestrator/v1/worker_pb.ts";
import type { WorkerJobEvent } from "../job/types.ts";
import { GrpcTransport, type GrpcTransportTlsOptions } from "../transport/grpc/grpc-transport.ts";
import { fromWireError } from "../wire/errors.ts";
import { WORKER_PROTOCOL } from "../wire/protocol.ts";
import { encodeJson, methodOf, PING_INTERVAL_HEADER, PING_TIMEOUT_HEADER, workerServiceDefinition } from "../wire/wire.ts";
import { CONFORMANCE_JOB_TYPE, type ConformanceEchoPayload } from "./echo-handler.ts";

/** Options of {@link runConformance}. */
export interface ConformanceOptions {
  /** TLS to reach the worker (with `cert`/`key` for mutual TLS). */
  tls?: GrpcTransportTlsOptions;
  /** Bearer token the worker requires. */
  token?: string;
  /** Longest a single check may take. @default 10000 */
  timeoutMs?: number;
  /** Run only the checks with these names (see {@link CONFORMANCE_CHECKS}). @default every check */
  only?: readonly string[];
}

/** The outcome of one check. */
export interface ConformanceResult {
  name: string;
  ok: boolean;
  /** Why it failed (or what it saw). */
  detail: string;
}

interface Check {
  name: string;
  run(context: CheckContext): Promise<string>;
}

interface CheckContext {
  address: string;
  options: ConformanceOptions;
  transport: GrpcTransport;
  timeoutMs: number;
}

class CheckFailed extends Error {}
function expect(condition: boolean, message: string): void {
  if (!condition) throw new CheckFailed(message);
}
const json = (value: unknown) => JSON.stringify(value);

let sequence = 0;
/** Runs one echo job through the transport, collecting its events. */
async function echo(context: CheckContext, payload: ConformanceEchoPayload, options: { signal?: AbortSignal; deadlineMs?: number } = {}) {
  const events: WorkerJobEvent[] = [];
  const controller = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, controller.signal]) : controller.signal;
  const request = {
    jobId: `conformance-${process.pid}-${++sequence}`,
    type: CONFORMANCE_JOB_TYPE,
    payload,
    attempt: 1,
    deadline: Date.now() + (options.deadlineMs ?? context.timeoutMs),
  };
  try {
    const value = await context.transport.execute(request, { signal, onEvent: (event) => events.push(event) });
    return { value, events, error: undefined };
  } catch (error) {
    return { value: undefined, events, error: OrchestratorError.from(error) };
  } finally {
    controller.abort();
  }
}

/** A plain grpc-js client of the worker service, and the call metadata (token) to use with it. */
function rawClient(address: string, options: ConformanceOptions): { client: Client; metadata: Metadata } {
  const creds = options.tls ? credentials.createSsl(Buffer.from(options.tls.ca), options.tls.key ? Buffer.from(options.tls.key) : null, options.tls.cert ? Buffer.from(options.tls.cert) : null) : credentials.createInsecure();
  const metadata = new Metadata();
  if (options.token !== undefined) metadata.set("authorization", `Bearer ${options.token}`);
  return { client: new Client(address, creds), metadata };
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * The stall rule from outside: this check is the orchestrator, so it can go silent. It announces
 * P = 200 ms and T = 3000 ms (S = 1600 ms), answers the Hello with Ping 1, stays silent for 2.5 s
 * (> S), then assigns a job and sends Ping 2 (the first since the stall) and, 300 ms later, Ping 3.
 * A conforming worker holds the job until Ping 3: nothing of it may arrive before Pong 3.
 */
async function stallRule({ address, options, timeoutMs }: CheckContext): Promise<string> {
  const { client, metadata } = rawClient(address, options);
  metadata.set(PING_INTERVAL_HEADER, "200");
  metadata.set(PING_TIMEOUT_HEADER, "3000");
  const method = methodOf(workerServiceDefinition, "session");
  const call = client.makeBidiStreamRequest(method.path, method.requestSerialize as (value: SessionRequest) => Buffer, method.responseDeserialize as (bytes: Buffer) => SessionResponse, metadata, {});
  const jobId = `conformance-${process.pid}-${++sequence}`;
  const seen: string[] = [];
  const waiters: Array<{ match: (entry: string) => boolean; resolve: () => void }> = [];
  const waitFor = (match: (entry: string) => boolean, what: string) =>
    seen.some(match)
      ? Promise.resolve()
      : new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new CheckFailed(`no ${what} within ${timeoutMs} ms (saw ${json(seen)})`)), timeoutMs);
          waiters.push({ match, resolve: () => (clearTimeout(timer), resolve()) });
        });
  const ping = (seq: number) => call.write(create(SessionRequestSchema, { messages: [{ kind: { case: "ping", value: { seq } } }] }));
  const ended = new Promise<never>((_, reject) => {
    call.on("error", (error: Error) => reject(new CheckFailed(`the session failed: ${error.message}`)));
    call.on("end", () => reject(new CheckFailed(`the worker ended the session (saw ${json(seen)})`)));
  });
  ended.catch(() => {});
  call.on("data", (response: SessionResponse) => {
    for (const message of response.messages) {
      const { kind } = message;
      const entry = kind.case === "pong" ? `pong ${kind.value.seq}` : kind.case === "hello" || kind.case === "slots" || kind.case === undefined ? kind.case ?? "?" : kind.value.jobId === jobId ? `job ${kind.case}` : `other ${kind.case}`;
      seen.push(entry);
      for (const waiter of waiters.splice(0)) (waiter.match(entry) ? waiter.resolve() : waiters.push(waiter));
    }
  });
  try {
    const steps = (async () => {
      await waitFor((e) => e === "hello", "Hello");
      ping(1);
      await waitFor((e) => e === "pong 1", "Pong 1");
      await delay(2500);
      call.write(create(SessionRequestSchema, {
        messages: [
          { kind: { case: "assign", value: { jobId, type: CONFORMANCE_JOB_TYPE, payload: encodeJson({ value: "after the stall" }, "payload"), attempt: 1, timeoutMs, deadlineUnixMs: Date.now() + timeoutMs } } },
          { kind: { case: "ping", value: { seq: 2 } } },
        ],
      }));
      await waitFor((e) => e === "pong 2", "Pong 2");
      await delay(300);
      ping(3);
      await waitFor((e) => e === "job result", "the job's Result after Ping 3");
    })();
    await Promise.race([steps, ended]);
    const early = seen.slice(0, seen.indexOf("pong 3") < 0 ? seen.length : seen.indexOf("pong 3")).filter((e) => e.startsWith("job "));
    expect(early.length === 0, `the job started on a stalled session: ${json(early)} arrived before Pong 3 (saw ${json(seen)})`);
    expect(seen.includes("pong 3"), `no Pong 3 before the job's result (saw ${json(seen)})`);
    return "held until a fresh ping round trip";
  } finally {
    call.cancel();
    client.close();
  }
}

const checks: Check[] = [
  {
    name: "describes itself: slots, job types with conformance.echo, protocol",
    async run({ transport }) {
      const description = await transport.describe();
      expect(description.slots >= 1, `slots is ${description.slots}, expected at least 1`);
      expect(description.jobTypes.includes(CONFORMANCE_JOB_TYPE), `job_types ${json(description.jobTypes)} lacks ${CONFORMANCE_JOB_TYPE}`);
      const protocol = (description as { protocol?: string }).protocol ?? "";
      expect(protocol === "" || protocol === WORKER_PROTOCOL, `protocol is "${protocol}", expected "${WORKER_PROTOCOL}"`);
      return `${description.slots} slot(s), version "${description.version}"`;
    },
  },
  {
    name: "answers the standard health check with SERVING",
    async run({ transport, timeoutMs }) {
      const status = await transport.check({ timeoutMs });
      expect(status === "serving", `health is ${status}`);
      return "serving";
    },
  },
  {
    name: "returns the handler's result as JSON, unchanged",
    async run(context) {
      const value = { text: "é✓", list: [1, 2.5, null, true], nested: { empty: {} } };
      const { value: got, error } = await echo(context, { value });
      expect(error === undefined, `failed: ${error?.message}`);
      expect(json(got) === json(value), `got ${json(got)}`);
      return "round trip ok";
    },
  },
  {
    name: "sends progress (clamped to 0..1) and log lines in order, before the result",
    async run(context) {
      const { events, error } = await echo(context, { steps: 3, clampProbe: true });
      expect(error === undefined, `failed: ${error?.message}`);
      const seen = events.map((e) => (e.kind === "progress" ? `p${e.progress}` : `l:${e.line}`));
      const expected = ["p0", "p1", "l:step 1", `p${1 / 3}`, "l:step 2", `p${2 / 3}`, "l:step 3", "p1"];
      expect(json(seen) === json(expected), `events ${json(seen)}, expected ${json(expected)}`);
      return `${events.length} events`;
    },
  },
  {
    name: "answers a job type it has no handler for with not_found",
    async run({ transport, timeoutMs }) {
      const error = await transport
        .execute(
          { jobId: `conformance-${process.pid}-${++sequence}`, type: "conformance.no-such-type", payload: {}, attempt: 1, deadline: Date.now() + timeoutMs },
          { signal: new AbortController().signal, onEvent: () => {} },
        )
        .then(() => undefined, (e: unknown) => OrchestratorError.from(e));
      expect(error?.code === "not_found", `got ${error ? `${error.code}: ${error.message}` : "a result"}`);
      return "not_found";
    },
  },
  {
    name: "marks a permanent failure non_retryable and a plain one retryable",
    async run(context) {
      const permanent = await echo(context, { fail: "permanent" });
      const plain = await echo(context, { fail: "retryable" });
      expect(permanent.error?.code === "handler_failed" && !permanent.error.retryable, `permanent: ${permanent.error?.code} retryable=${permanent.error?.retryable}`);
      expect(plain.error?.code === "handler_failed" && plain.error.retryable, `plain: ${plain.error?.code} retryable=${plain.error?.retryable}`);
      return "flags ok";
    },
  },
  {
    name: "cancels a running job at once and frees its slot for the next one",
    async run(context) {
      // Cancel once the job has reported that it runs (its first log line).
      const controller = new AbortController();
      const error = await context.transport
        .execute(
          { jobId: `conformance-${process.pid}-${++sequence}`, type: CONFORMANCE_JOB_TYPE, payload: { steps: 1, sleepMs: 60_000 }, attempt: 1, deadline: Date.now() + 120_000 },
          { signal: controller.signal, onEvent: () => controller.abort(new OrchestratorError("canceled", "conformance cancel")) },
        )
        .then(() => undefined, (e: unknown) => OrchestratorError.from(e));
      expect(error?.code === "canceled", `the call ended with ${error ? `${error.code}: ${error.message}` : "a result"}`);
      const after = await echo(context, { value: "after" });
      expect(after.value === "after", `the next job got ${after.error ? after.error.message : json(after.value)}`);
      return "cancelled, slot reused";
    },
  },
  {
    name: "enforces timeout_ms itself (Execute RPC, no call deadline)",
    async run({ address, options, timeoutMs }) {
      const { client, metadata } = rawClient(address, options);
      const method = methodOf(workerServiceDefinition, "execute");
      const request = create(ExecuteRequestSchema, {
        job: { jobId: `conformance-${process.pid}-${++sequence}`, type: CONFORMANCE_JOB_TYPE, payload: encodeJson({ sleepMs: 60_000 }, "payload"), attempt: 1, timeoutMs: 300 },
      });
      try {
        const code = await new Promise<string>((resolve, reject) => {
          const call = client.makeServerStreamRequest(method.path, method.requestSerialize, method.responseDeserialize, request, metadata, {});
          const timer = setTimeout(() => (call.cancel(), reject(new CheckFailed(`no result ${timeoutMs} ms after a 300 ms timeout`))), timeoutMs);
          call.on("data", (response: ExecuteResponse) => {
            if (response.kind.case !== "result") return;
            clearTimeout(timer);
            const outcome = response.kind.value.outcome;
            resolve(outcome.case === "error" ? fromWireError(outcome.value).code : "a value");
          });
          call.on("error", (error) => (clearTimeout(timer), reject(new CheckFailed(`the call failed: ${error.message}`))));
        });
        expect(code === "deadline_exceeded", `the Result's code is ${code}`);
        return "deadline_exceeded";
      } finally {
        client.close();
      }
    },
  },
  {
    name: "answers pings while a job runs (the session outlives a job longer than the ping timeout)",
    async run(context) {
      const strict = new GrpcTransport({ address: context.address, ...(context.options.tls ? { tls: context.options.tls } : {}), ...(context.options.token ? { token: context.options.token } : {}), pingIntervalMs: 100, pingTimeoutMs: 500 });
      try {
        const { value, error } = await echo({ ...context, transport: strict }, { value: "slow", sleepMs: 1500 });
        expect(error === undefined && value === "slow", `failed: ${error ? `${error.code}: ${error.message}` : json(value)}`);
        return "session held";
      } finally {
        await strict.close();
      }
    },
  },
  {
    name: "holds a job assigned on a stalled session until a fresh ping round trip",
    run: stallRule,
  },
];

/** The names of the checks, in the order {@link runConformance} runs them. */
export const CONFORMANCE_CHECKS: readonly string[] = checks.map((check) => check.name);

/**
 * Runs every check against the worker at `address`, one after the other, calling `onResult`
 * with each outcome as it comes; resolves with all of them. Never throws for a failing worker.
 */
export async function runConformance(address: string, options: ConformanceOptions = {}, onResult: (result: ConformanceResult) => void = () => {}): Promise<ConformanceResult[]> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const transport = new GrpcTransport({ address, ...(options.tls ? { tls: options.tls } : {}), ...(options.token ? { token: options.token } : {}) });
  const results: ConformanceResult[] = [];
  try {
    for (const check of checks) {
      if (options.only !== undefined && !options.only.includes(check.name)) continue;
      let result: ConformanceResult;
      try {
        const detail = await Promise.race([
          check.run({ address, options, transport, timeoutMs: timeoutMs }),
          new Promise<never>((_, reject) => setTimeout(() => reject(new CheckFailed(`no answer within ${timeoutMs * 2} ms`)), timeoutMs * 2).unref()),
        ]);
        result = { name: check.name, ok: true, detail };
      } catch (error) {
        result = { name: check.name, ok: false, detail: error instanceof CheckFailed ? error.message : OrchestratorError.from(error).message };
      }
      results.push(result);
      onResult(result);
    }
  } finally {
    await transport.close();
  }
  return results;
}
