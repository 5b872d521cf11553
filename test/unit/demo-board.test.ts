import { describe, expect, it } from "vitest";
import { Board, fit } from "../../examples/demo/board.ts";

/** A terminal of `columns` columns that records what is written. */
function terminal(columns: number) {
  const writes: string[] = [];
  const out = { columns, isTTY: true, write: (text: string) => writes.push(text) } as unknown as NodeJS.WriteStream;
  return { out, writes };
}

const visible = (line: string) => line.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");

describe("the demo's board", () => {
  it("cuts every line to the terminal's width, so the redraw moves up exactly the lines it drew", () => {
    const { out, writes } = terminal(40);
    const board = new Board("a title much longer than forty columns, as the demo's is", out, { tty: true });
    board.worker("w1", { state: "busy", running: 2 });
    board.job("j1", { label: "build api-1", state: "running", worker: "w1", progress: 0.5, note: "step 3/6: compiling the sources" });
    board.event("w2 evicted: a reason long enough to wrap a narrow terminal twice over");
    board.stop();
    board.job("j1", { progress: 0.75 });
    board.stop();
    expect(writes).toHaveLength(2);
    const [first, second] = writes as [string, string];
    const lines = first.split("\n").slice(0, -1);
    for (const line of lines) expect(visible(line).length).toBeLessThanOrEqual(39);
    expect(second.startsWith(`\x1b[${lines.length}F`)).toBe(true);
  });

  it("keeps colour codes whole when it cuts, and resets the colour after a cut", () => {
    expect(fit("\x1b[36mrunning\x1b[0m and more", 5)).toBe("\x1b[36mrunn\x1b[0m");
    expect(fit("short", 80)).toBe("short");
  });

  it("never shows a started job as queued when the producer's queued update arrives late", () => {
    const board = new Board("t", terminal(80).out, { tty: true });
    board.job("j1", { state: "running", worker: "w1", progress: 0.2 });
    board.job("j1", { label: "build api-1", state: "queued" });
    expect(board.rows()).toEqual([expect.objectContaining({ label: "build api-1", state: "running", worker: "w1" })]);
    board.job("j2", { label: "build web-1", state: "queued" });
    expect(board.rows()[1]).toMatchObject({ state: "queued" });
    board.stop();
  });
});
