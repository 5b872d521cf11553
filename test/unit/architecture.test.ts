import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { checkImports, readRooms, roomOf } from "../../scripts/check-imports.ts";

const root = join(import.meta.dirname, "..", "..");
const rooms = readRooms(readFileSync(join(root, "ARCHITECTURE.md"), "utf8"));

describe("ARCHITECTURE.md's rooms", () => {
  it("every room under src/ is in the table, and every import follows it", () => {
    const { violations, unknownRooms } = checkImports(join(root, "src"), rooms);
    expect(unknownRooms).toEqual([]);
    expect(violations.map((v) => `${v.file}: ${v.from} may not import ${v.to} (${v.imports})`)).toEqual([]);
  });

  it("places files by their longest listed room, entry files in none", () => {
    expect(roomOf("queue/amqp/amqp-queue.ts", rooms)).toBe("queue/amqp");
    expect(roomOf("queue/memory-queue.ts", rooms)).toBe("queue");
    expect(roomOf("timers.ts", rooms)).toBe("timers");
    expect(roomOf("worker/handlers/shell.ts", rooms)).toBe("worker");
    expect(roomOf("transport/grpc/index.ts", rooms)).toBeUndefined();
  });

  it("catches an import its room may not make", () => {
    // With client narrowed to errors only, its imports of queue/ must be reported.
    const narrowed = new Map(rooms);
    narrowed.set("client", new Set(["errors"]));
    const { violations } = checkImports(join(root, "src"), narrowed);
    expect(violations.some((v) => v.from === "client" && v.to === "queue")).toBe(true);
  });
});
