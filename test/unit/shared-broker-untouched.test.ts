import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { RabbitMqNode } from "../../src/testing/broker/rabbitmq-node.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && /\.(ts|js|mjs|sh)$/.test(entry.name))
    .map((entry) => relative(root, join(entry.parentPath, entry.name)));
}

/** The one file that runs rabbitmqctl (in the private-broker helper's folder): private nodes, with their own cookie and `-n`. */
const PRIVATE_NODE = "src/testing/broker/rabbitmq-node.ts";

describe("the machine's shared broker", () => {
  it("is never driven by rabbitmqctl from the suite, the bench or the examples: only the private-node helper runs it", () => {
    // A string literal starting with the command (or its path) is how a file would run it
    // (execFile, spawn, a shell line); a sentence that mentions it is not.
    const runsCtl = /["'`](?:[^"'`\s]*\/)?rabbitmq(?:ctl|-plugins|-queues|-diagnostics|-upgrade)(?:\s[^"'`\n]*)?["'`]/;
    const offenders = ["src", "test", "bench", "examples", "scripts"]
      .flatMap(sources)
      .filter((file) => !file.startsWith("src/testing/broker/") && file !== "test/unit/shared-broker-untouched.test.ts")
      .filter((file) => readFileSync(join(root, file), "utf8").split("\n").some((line) => runsCtl.test(line) && !/^\s*(\*|\/\/|\/\*)/.test(line)));
    expect(offenders).toEqual([]);
  });

  it("the private-node helper passes -n <its node> and its own HOME (cookie) to every rabbitmqctl", () => {
    const text = readFileSync(join(root, PRIVATE_NODE), "utf8");
    const calls = text.split("\n").filter((line) => line.includes('"rabbitmqctl"'));
    expect(calls).toHaveLength(1);
    expect(calls[0]).toContain('["-n", this.spec.name');
    expect(calls[0]).toContain("env: this.#env()");
    expect(text).toContain('HOME: join(dir, "home")');
  });

  it("refuses to make a private node named like the machine's broker (rabbit@…)", () => {
    expect(() => new RabbitMqNode({ name: "rabbit@localhost", dir: "/nonexistent", amqpPort: 1, distPort: 2, binDir: "/nonexistent", cookie: "x" })).toThrow(/must not be named like the machine's broker/);
  });
});
