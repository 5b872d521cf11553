/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`): self time by function and by file, so a
 * bench note can say where a process spends its CPU rather than guess.
 *
 *   node bench/lib/profile-summary.ts bench/results/profiles/<file>.cpuprofile [top=25]
 */
import { readFileSync } from "node:fs";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** One row of the summary: self time in ms and its share of the profile's busy (non-idle) time. */
export interface ProfileRow {
  name: string;
  selfMs: number;
  pct: number;
}

function shortUrl(url: string): string {
  const at = url.indexOf("/node_modules/");
  if (at >= 0) return url.slice(at + "/node_modules/".length);
  const src = url.search(/\/(src|bench)\//);
  return src >= 0 ? url.slice(src + 1) : url.replace(/^node:/, "node:");
}

/** Self time per function and per file (package for dependencies), busiest first. */
export function summarizeProfile(profile: CpuProfile): { busyMs: number; idleMs: number; byFunction: ProfileRow[]; byFile: ProfileRow[] } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const fn = new Map<string, number>();
  const file = new Map<string, number>();
  let idleUs = 0;
  let busyUs = 0;
  for (const [id, us] of selfUs) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    if (functionName === "(idle)") {
      idleUs += us;
      continue;
    }
    busyUs += us;
    // Native frames have no url: name them by function ((garbage collector), (program), writev…).
    const where = url ? shortUrl(url) : functionName;
    const key = `${functionName || "(anonymous)"} ${where}:${lineNumber + 1}`;
    fn.set(key, (fn.get(key) ?? 0) + us);
    // Our files by path; a dependency by package name.
    const ours = where.startsWith("src/") || where.startsWith("bench/") || !where.includes("/");
    const pkg = ours ? where : where.split("/").slice(0, where.startsWith("@") ? 2 : 1).join("/");
    file.set(pkg, (file.get(pkg) ?? 0) + us);
  }
  const rows = (m: Map<string, number>): ProfileRow[] =>
    [...m].map(([name, us]) => ({ name, selfMs: us / 1000, pct: (us / busyUs) * 100 })).sort((a, b) => b.selfMs - a.selfMs);
  return { busyMs: busyUs / 1000, idleMs: idleUs / 1000, byFunction: rows(fn), byFile: rows(file) };
}

if (import.meta.main) {
  const [path, topArg] = process.argv.slice(2);
  if (path === undefined) {
    console.error("usage: node bench/lib/profile-summary.ts <file.cpuprofile> [top]");
    process.exit(2);
  }
  const top = Number(topArg ?? 25);
  const summary = summarizeProfile(JSON.parse(readFileSync(path, "utf8")) as CpuProfile);
  console.log(`busy ${summary.busyMs.toFixed(0)} ms, idle ${summary.idleMs.toFixed(0)} ms`);
  console.log("\nself time by file / package:");
  for (const r of summary.byFile.slice(0, top)) console.log(`${r.pct.toFixed(1).padStart(6)} %  ${r.selfMs.toFixed(0).padStart(7)} ms  ${r.name}`);
  console.log("\nself time by function:");
  for (const r of summary.byFunction.slice(0, top)) console.log(`${r.pct.toFixed(1).padStart(6)} %  ${r.selfMs.toFixed(0).padStart(7)} ms  ${r.name}`);
}
