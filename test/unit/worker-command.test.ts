import { describe, expect, it } from "vitest";
import { helpText, parseWorkerArgs, UsageError } from "../../src/cli/worker-args.ts";
import { runWorkerCommand } from "../../src/cli/worker-command.ts";

describe("blacktree-worker arguments", () => {
  it("reads every flag, and fills the rest with defaults", () => {
    const options = parseWorkerArgs(
      ["--handlers", "shell,./h.js", "--port", "0", "--slots", "4", "--labels", "zone=eu, gpu=a100", "--announce", "amqp://rabbit", "--advertise", "10.0.0.7:50051", "--token", "t", "--log-format", "json"],
      {},
    );
    expect(options).toMatchObject({
      handlers: ["shell", "./h.js"],
      port: 0,
      host: "0.0.0.0",
      slots: 4,
      labels: { zone: "eu", gpu: "a100" },
      announce: "amqp://rabbit",
      advertise: "10.0.0.7:50051",
      announceIntervalMs: 2000,
      token: "t",
      gracePeriodMs: 30_000,
      logFormat: "json",
      imageEngine: "auto",
    });
  });

  it("takes each flag from its BLACKTREE_* variable, a flag winning over its variable", () => {
    const env = { BLACKTREE_HANDLERS: "image-build", BLACKTREE_SLOTS: "3", BLACKTREE_LABELS: "arch=arm64", BLACKTREE_PORT: "6000", BLACKTREE_LOG_FORMAT: "json", BLACKTREE_IMAGE_ENGINE: "buildah" };
    expect(parseWorkerArgs([], env)).toMatchObject({ handlers: ["image-build"], slots: 3, labels: { arch: "arm64" }, port: 6000, logFormat: "json", imageEngine: "buildah" });
    expect(parseWorkerArgs(["--slots", "5"], env)).toMatchObject({ slots: 5 });
  });

  it.each([
    [["--handlers", "shell", "--bogus"], /Unknown option '--bogus'/],
    [[], /--handlers is required/],
    [["--handlers", "shell", "--slots", "0"], /--slots expects an integer from 1 to 100000, got "0"/],
    [["--handlers", "shell", "--port", "http"], /--port expects an integer/],
    [["--handlers", "shell", "--labels", "zone"], /--labels expects k=v pairs/],
    [["--handlers", "shell", "--announce", "http://rabbit"], /--announce expects an amqp:\/\/ or amqps:\/\/ URL/],
    [["--handlers", "shell", "--log-format", "xml"], /--log-format expects one of text, json/],
    [["--handlers", "shell", "--tls-cert", "c.pem"], /--tls-cert and --tls-key go together/],
  ])("refuses %j with one line naming the flag", (argv, message) => {
    let error: unknown;
    try {
      parseWorkerArgs(argv, {});
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(UsageError);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).not.toContain("\n");
  });

  it("names a bad environment variable as such", () => {
    expect(() => parseWorkerArgs([], { BLACKTREE_HANDLERS: "shell", BLACKTREE_SLOTS: "many" })).toThrow(/BLACKTREE_SLOTS expects an integer/);
  });

  it("documents every flag with its variable in --help", () => {
    const text = helpText();
    for (const flag of ["--handlers", "--port", "--slots", "--labels", "--announce", "--advertise", "--tls-cert", "--tls-key", "--tls-ca", "--token", "--log-format"]) expect(text).toContain(flag);
    expect(text).toContain("[BLACKTREE_ANNOUNCE]");
  });

  it("exits 2 with one line on stderr for a bad flag, and 0 with the help on stdout for --help", async () => {
    const out: string[] = [];
    const err: string[] = [];
    const codes: number[] = [];
    const io = { out: (line: string) => out.push(line), err: (line: string) => err.push(line), exit: (code: number) => void codes.push(code) };
    await runWorkerCommand(["--handlers", "shell", "--slots", "-1"], {}, io);
    expect(codes).toEqual([2]);
    expect(err).toHaveLength(1);
    expect(err[0]).toMatch(/^blacktree-worker: .*--slots.* \(see --help\)$/);
    await runWorkerCommand(["--help"], {}, io);
    expect(codes).toEqual([2, 0]);
    expect(out.join("\n")).toContain("Usage: blacktree-worker");
  });

  it("exits 2 naming a handlers module that cannot be loaded", async () => {
    const err: string[] = [];
    const codes: number[] = [];
    await runWorkerCommand(["--handlers", "/nonexistent/handlers.js", "--port", "0"], {}, { out: () => {}, err: (line) => err.push(line), exit: (code) => void codes.push(code) });
    expect(codes).toEqual([2]);
    expect(err.join("\n")).toMatch(/cannot load \/nonexistent\/handlers\.js/);
  });
});
