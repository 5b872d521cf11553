/**
 * Where RabbitMQ's share of a product job goes, by Erlang process: one closed-loop product round
 * (4 worker processes × 16 slots, 2,000 warm-up jobs), and the reductions (the VM's count of work
 * done) of every process of the local broker during the measured jobs, per job, busiest first;
 * channels are named after their connection (`bench-orchestrator#1`: the orchestrator's channel 1).
 * Reductions count work, not time, so unlike the broker's CPU they do not move with what other
 * sessions make the machine do; the VM's total still includes their traffic.
 *
 *   node --no-warnings bench/broker-processes.ts [jobs=10000] [top=20]
 *
 * It runs on a private RabbitMQ node of its own (`RabbitMqNodes`, beside the machine's broker,
 * which nothing of ours drives with `rabbitmqctl`): the counters are then this round's alone.
 */
import { killAllChildren } from "./lib/proc.ts";
import { RabbitMqNodes } from "../src/testing/broker/rabbitmq-nodes.ts";

const jobs = Number(process.argv[2] ?? 10_000);
const top = Number(process.argv[3] ?? 20);
process.on("exit", killAllChildren);

const node = await RabbitMqNodes.start({ nodes: 1 });
process.on("exit", () => void node.close());
// The bench's processes (this one's imports and the children it starts) read the broker's URL from here.
process.env.BENCH_AMQP_URL = node.urls[0];
const { withProductSystem } = await import("./product/system.ts");

/** Evaluates an Erlang expression on the broker; its value printed with `~w`, as a string. */
async function erl(expression: string): Promise<string> {
  const out = await node.ctl(0, "eval", `lists:flatten(io_lib:format("~w", [${expression}])).`);
  return out.trim().replace(/^"|"$/g, "");
}
const text = (codes: string) => String.fromCharCode(...codes.split(",").map(Number));

/** Reductions and what each process is (registered name or initial call), by pid. */
async function processes(): Promise<Map<string, { reductions: number; what: string }>> {
  // `$` is avoided: rabbitmqctl's wrapper script would expand it.
  const initialCall = "list_to_atom([36|\"initial_call\"])";
  const out = await erl(
    `[{pid_to_list(P), R, case erlang:process_info(P, [registered_name, dictionary]) of ` +
      `[{registered_name, N}, {dictionary, D}] when is_atom(N) -> {N, proplists:get_value(${initialCall}, D)}; ` +
      `[_, {dictionary, D}] -> proplists:get_value(${initialCall}, D); _ -> x end} ` +
      `|| P <- erlang:processes(), {reductions, R} <- [erlang:process_info(P, reductions)]]`,
  );
  const result = new Map<string, { reductions: number; what: string }>();
  for (const m of out.matchAll(/\{\[([\d,]+)\],(\d+),(.*?)\}(?=,\{\[|\]$)/g)) result.set(text(m[1]!), { reductions: Number(m[2]), what: m[3]!.slice(0, 100) });
  return result;
}

/** `connection name#channel number` of each channel process, by pid. */
async function channelNames(): Promise<Map<string, string>> {
  const out = await erl(
    `[{pid_to_list(Ch), proplists:get_value(number, rabbit_channel:info(Ch, [number])), ` +
      `case lists:keyfind(<<"connection_name">>, 1, proplists:get_value(client_properties, rabbit_reader:info(proplists:get_value(connection, rabbit_channel:info(Ch, [connection])), [client_properties]))) of {_, _, N} -> N; _ -> <<>> end} ` +
      `|| Ch <- rabbit_channel:list()]`,
  );
  const names = new Map<string, string>();
  for (const m of out.matchAll(/\{\[([\d,]+)\],(\d+),<<([\d,]*)>>\}/g)) names.set(text(m[1]!), `${m[3] ? text(m[3]) : "?"}#${m[2]}`);
  return names;
}

await withProductSystem({ workers: 4, slotsPerWorker: 16 }, async (system) => {
  await system.producer.request("submitMany", { count: 2000 }, 300_000);
  const before = await processes();
  const r = await system.producer.request<{ failed: number }>("submitMany", { count: jobs }, 600_000);
  const after = await processes();
  const names = await channelNames();
  if (r.failed > 0) throw new Error(`${r.failed} jobs did not complete`);
  const rows = [...after].map(([pid, { reductions, what }]) => ({ pid, perJob: (reductions - (before.get(pid)?.reductions ?? 0)) / jobs, what: names.get(pid) ?? what }));
  rows.sort((a, b) => b.perJob - a.perJob);
  const total = rows.reduce((sum, row) => sum + row.perJob, 0);
  console.log(`RabbitMQ reductions per job, ${jobs.toLocaleString("en-US")} jobs (job queue ${system.queue}): ${Math.round(total)} in the whole VM\n`);
  console.log("| reductions per job | process |\n| --- | --- |");
  for (const row of rows.slice(0, top)) console.log(`| ${Math.round(row.perJob)} | ${row.what} |`);
});
await node.close();
process.exit(0);
