/**
 * Checks every relative import under src/ against the rooms table of ARCHITECTURE.md (between
 * `<!-- rooms:begin -->` and `<!-- rooms:end -->`): a file may import its own room and the rooms
 * its row lists. Run by test/unit/architecture.test.ts; by hand: `node scripts/check-imports.ts`.
 */
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const BASE = ["errors", "validate", "timers", "signals", "events"];

/** Files that belong to another room than their folder says (kept until they move). */
const PLACED: Record<string, string> = { "worker-pool/emit-safely.ts": "events", "events.ts": "events" };

export interface ImportViolation {
  file: string;
  imports: string;
  from: string;
  to: string;
}

/** Room name → the rooms it may import ("*" for any). */
export function readRooms(architectureMd: string): Map<string, Set<string>> {
  const begin = architectureMd.indexOf("<!-- rooms:begin -->");
  const end = architectureMd.indexOf("<!-- rooms:end -->");
  if (begin < 0 || end < begin) throw new Error("ARCHITECTURE.md has no rooms table between <!-- rooms:begin --> and <!-- rooms:end -->");
  const rooms = new Map<string, Set<string>>();
  for (const line of architectureMd.slice(begin, end).split("\n")) {
    const cells = line.split("|").map((cell) => cell.trim());
    const name = /^`([^`]+)`$/.exec(cells[1] ?? "")?.[1];
    if (name === undefined) continue;
    const allowed = new Set<string>();
    for (const entry of (cells[3] ?? "").split(",").map((s) => s.trim()).filter(Boolean)) {
      if (entry === "base") for (const room of BASE) allowed.add(room);
      else allowed.add(entry);
    }
    rooms.set(name, allowed);
  }
  return rooms;
}

/** The room of a path relative to src/, or undefined for an entry file (may import anything). */
export function roomOf(path: string, rooms: ReadonlyMap<string, unknown>): string | undefined {
  if (path === "index.ts" || path.endsWith("/index.ts")) return undefined;
  if (PLACED[path] !== undefined) return PLACED[path];
  const parts = path.split("/");
  if (parts.length === 1) return (parts[0] as string).replace(/\.ts$/, "");
  const nested = `${parts[0]}/${parts[1]}`;
  return parts.length > 2 && rooms.has(nested) ? nested : (parts[0] as string);
}

/** Every import under `srcDir` that its room may not make, plus rooms missing from the table. */
export function checkImports(srcDir: string, rooms: ReadonlyMap<string, ReadonlySet<string>>): { violations: ImportViolation[]; unknownRooms: string[] } {
  const violations: ImportViolation[] = [];
  const unknown = new Set<string>();
  const files = (readdirSync(srcDir, { recursive: true }) as string[]).map((f) => f.split("\\").join("/")).filter((f) => f.endsWith(".ts"));
  for (const file of files) {
    const from = roomOf(file, rooms);
    if (from === undefined || from === "gen") continue;
    const allowed = rooms.get(from);
    if (allowed === undefined) {
      unknown.add(from);
      continue;
    }
    if (allowed.has("*")) continue;
    const text = readFileSync(join(srcDir, file), "utf8");
    for (const match of text.matchAll(/(?:\bfrom\s*|\bimport\s*\(?\s*)"(\.{1,2}\/[^"]+)"/g)) {
      const target = relative(srcDir, resolve(dirname(join(srcDir, file)), match[1] as string)).split("\\").join("/");
      const to = roomOf(target, rooms);
      if (to === undefined || to === from || allowed.has(to)) continue;
      violations.push({ file: `src/${file}`, imports: match[1] as string, from, to });
    }
  }
  return { violations, unknownRooms: [...unknown].sort() };
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
  const rooms = readRooms(readFileSync(join(root, "ARCHITECTURE.md"), "utf8"));
  const { violations, unknownRooms } = checkImports(join(root, "src"), rooms);
  for (const room of unknownRooms) console.error(`room ${room} is not in ARCHITECTURE.md's rooms table: add a row saying what it holds and may import`);
  for (const v of violations) console.error(`${v.file}: ${v.from} may not import ${v.to} ("${v.imports}"); see ARCHITECTURE.md`);
  if (violations.length > 0 || unknownRooms.length > 0) process.exit(1);
  console.log(`imports follow ARCHITECTURE.md (${rooms.size} rooms)`);
}
