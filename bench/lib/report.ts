/** The bench's result document: fields with a value or a reason for null, targets, table, JSON file. */
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem, platform, arch, release } from "node:os";
import { dirname } from "node:path";

/** A target printed as met / not met (never asserted). */
export interface Target {
  /** Dotted field path, e.g. `ratios.product_vs_baseline`. */
  field: string;
  label: string;
  op: ">=" | "<=";
  value: number;
  /** Unit shown in the table. */
  unit: string;
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Collects figures by dotted path (`throughput.product_jobs_s`) and why a figure is null. */
export class Report {
  readonly data: Record<string, Json> = {};
  /** Why a field is null, by dotted path. */
  readonly nullReasons: Record<string, string> = {};

  /** Sets a figure; a `null` value needs a reason. */
  set(path: string, value: Json | undefined, reasonIfNull?: string): void {
    const v = value === undefined || (typeof value === "number" && !Number.isFinite(value)) ? null : value;
    const parts = path.split(".");
    let node = this.data;
    for (const part of parts.slice(0, -1)) {
      const child = node[part];
      if (child === undefined || child === null || typeof child !== "object" || Array.isArray(child)) node[part] = {};
      node = node[part] as Record<string, Json>;
    }
    node[parts.at(-1)!] = v;
    if (v === null) this.nullReasons[path] = reasonIfNull ?? "not measured";
    else delete this.nullReasons[path];
  }

  /** Sets every path to null with the same reason. */
  setNull(paths: readonly string[], reason: string): void {
    for (const p of paths) this.set(p, null, reason);
  }

  get(path: string): Json | undefined {
    let node: Json | undefined = this.data;
    for (const part of path.split(".")) {
      if (node === null || typeof node !== "object" || Array.isArray(node)) return undefined;
      node = node[part];
    }
    return node;
  }
}

/** What machine and software the figures come from. */
export function machineInfo(): Record<string, Json> {
  const list = cpus();
  return {
    cpus: list.length,
    cpu_model: list[0]?.model ?? "unknown",
    total_mem_gb: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    platform: `${platform()} ${release()} ${arch()}`,
    node: process.version,
  };
}

function fmt(value: Json | undefined, unit = ""): string {
  if (typeof value !== "number") return "null";
  const abs = Math.abs(value);
  // Small figures (a slope per worker) keep two significant digits instead of rounding to 0.00.
  const text = abs >= 100 || Number.isInteger(value) ? Math.round(value).toLocaleString("en-US") : abs >= 10 ? value.toFixed(1) : abs >= 0.1 ? value.toFixed(2) : value.toPrecision(2);
  return unit ? `${text} ${unit}` : text;
}

/** Verdict of a target: met, not met, or n/a when the figure is missing. */
export function verdict(report: Report, target: Target): "met" | "not met" | "n/a" {
  const v = report.get(target.field);
  if (typeof v !== "number") return "n/a";
  return (target.op === ">=" ? v >= target.value : v <= target.value) ? "met" : "not met";
}

/** Prints the table of figures (and their targets) to stdout. */
export function printTable(report: Report, rows: readonly { field: string; label: string; unit: string }[], targets: readonly Target[]): void {
  const lines: string[][] = [["figure", "value", "target", "verdict"]];
  for (const row of rows) {
    const target = targets.find((t) => t.field === row.field);
    const value = report.get(row.field);
    lines.push([
      row.label,
      fmt(value, row.unit),
      target ? `${target.op} ${fmt(target.value, target.unit)}` : "",
      target ? verdict(report, target) : "",
    ]);
  }
  const widths = lines[0]!.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
  const out = lines.map((l, n) => {
    const text = l.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  ");
    return n === 0 ? `${text}\n${widths.map((w) => "-".repeat(w)).join("  ")}` : text;
  });
  console.log(out.join("\n"));
  // Many figures share one reason (a missing piece): print each reason once with its fields.
  const byReason = new Map<string, string[]>();
  for (const [field, reason] of Object.entries(report.nullReasons)) byReason.set(reason, [...(byReason.get(reason) ?? []), field]);
  if (byReason.size > 0) {
    console.log("\nnull figures, and why:");
    for (const [reason, fields] of byReason) console.log(`  ${fields.join(", ")}\n      ${reason}`);
  }
}

/** Writes `value` as pretty JSON to `path`, creating its folder. */
export function writeJson(path: string, value: unknown): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);
}
