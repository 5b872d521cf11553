import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { waitFor } from "../../src/testing/wait-for.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";

const rabbit = await useRabbitMq();
const example = fileURLToPath(new URL("../../examples/rabbitmq.ts", import.meta.url));
/** Maps the package name the example imports to the sources (test/package/examples.test.ts runs it against the packed package). */
const sourceImports = fileURLToPath(new URL("../../scripts/source-imports.mjs", import.meta.url));

/** Runs one role of examples/rabbitmq.ts as its own process, collecting its output. */
function role(name: "orchestrator" | "producer", args: string[]) {
  const child: ChildProcess = spawn(process.execPath, ["--no-warnings", "--import", sourceImports, example, name, ...args], {
    env: { ...process.env, AMQP_URL: rabbit.url },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const output = { text: "" };
  child.stdout?.on("data", (chunk: Buffer) => (output.text += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (output.text += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, output, exited };
}

describe.skipIf(!rabbit.available)("examples/rabbitmq.ts", () => {
  afterAll(() => rabbit.cleanup());

  it("runs a producer process and an orchestrator process that meet through RabbitMQ: the producer gets every job's progress, logs and result", async () => {
    const queue = rabbit.queueName();
    const orchestrator = role("orchestrator", ["--queue", queue]);
    try {
      await waitFor(() => orchestrator.output.text.includes("ready: consuming"), { timeoutMs: 10_000, what: "the orchestrator ready" });
      const producer = role("producer", ["--queue", queue, "--jobs", "3"]);
      const code = await Promise.race([producer.exited, new Promise<string>((resolve) => setTimeout(() => resolve("still running after 10 s"), 10_000))]);
      if (code !== 0) producer.child.kill("SIGKILL");
      expect(code, producer.output.text).toBe(0);
      const ids = [...producer.output.text.matchAll(/submitted (\S+)/g)].map((match) => match[1]);
      expect(ids).toHaveLength(3);
      for (const [i, id] of ids.entries()) {
        expect(producer.output.text).toContain(`${id} log: rendered 256px (attempt 1)`);
        expect(producer.output.text).toContain(`${id} 100% 3/3 sizes`);
        expect(producer.output.text).toContain(`${id} result: photo-${i + 1}-64.webp, photo-${i + 1}-256.webp, photo-${i + 1}-1024.webp`);
        expect(orchestrator.output.text).toMatch(new RegExp(`${id} completed in \\d+ ms`));
      }
      expect(producer.output.text).toContain("3 of 3 jobs completed");
    } finally {
      orchestrator.child.kill("SIGTERM");
    }
    expect(await orchestrator.exited, orchestrator.output.text).toBe(0);
    expect(orchestrator.output.text).toContain("[orchestrator] stopped");
    expect(await rabbit.messageCount(queue)).toBe(0);
  });
});
