import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { HttpError } from "./http.ts";

/** The page's files, by the path they are served at. @internal */
export const PAGE_FILES: Readonly<Record<string, { file: string; type: string }>> = {
  "/": { file: "index.html", type: "text/html; charset=utf-8" },
  "/assets/console.js": { file: "console.js", type: "text/javascript; charset=utf-8" },
  "/assets/console.css": { file: "console.css", type: "text/css; charset=utf-8" },
};

/** This module's directory, in the ESM and CJS builds and from source. */
function moduleDir(): string {
  if (typeof __dirname === "string") return __dirname;
  return dirname(fileURLToPath(import.meta.url));
}

/**
 * Where the page comes from: the built files shipped in the package (`dist/console-ui/`, beside
 * the bundle that holds this module, built with the package), or, when running from the repository's sources, the page's
 * sources (`src/console/ui/`) with `main.ts` bundled in memory by esbuild (a dev dependency) on
 * each request, so the demo and the tests need no build step. @internal
 */
export class PageFiles {
  readonly #dir: string | undefined;
  readonly #fromSource: boolean;
  readonly #cache = new Map<string, Buffer>();

  constructor(uiDir: string | undefined) {
    if (uiDir !== undefined) {
      this.#dir = uiDir;
      this.#fromSource = !existsSync(join(uiDir, "console.js")) && existsSync(join(uiDir, "main.ts"));
      return;
    }
    const here = moduleDir();
    const built = join(here, "console-ui");
    const source = join(here, "ui");
    if (existsSync(join(built, "index.html"))) {
      this.#dir = built;
      this.#fromSource = false;
    } else if (existsSync(join(source, "index.html"))) {
      this.#dir = source;
      this.#fromSource = true;
    } else {
      this.#dir = undefined;
      this.#fromSource = false;
    }
  }

  /** The bytes and content type of the file served at `path`, or undefined when `path` is no page file. */
  async read(path: string): Promise<{ body: Buffer; type: string } | undefined> {
    const entry = PAGE_FILES[path];
    if (entry === undefined) return undefined;
    if (this.#dir === undefined) throw new HttpError(503, "unavailable", "The console page is not installed (no console-ui files beside the package's build)");
    if (this.#fromSource && entry.file === "console.js") return { body: await this.#bundle(this.#dir), type: entry.type };
    const cached = this.#cache.get(entry.file);
    if (cached !== undefined) return { body: cached, type: entry.type };
    const body = await readFile(join(this.#dir, entry.file));
    if (!this.#fromSource) this.#cache.set(entry.file, body);
    return { body, type: entry.type };
  }

  async #bundle(dir: string): Promise<Buffer> {
    // A computed specifier, so that no bundler pulls esbuild into the package's build.
    const name = "esbuild";
    let esbuild: { build(options: Record<string, unknown>): Promise<{ outputFiles: Array<{ contents: Uint8Array }> }> };
    try {
      esbuild = (await import(name)) as typeof esbuild;
    } catch {
      throw new HttpError(503, "unavailable", "The console page is not built, and esbuild (to build it from source) is not installed");
    }
    const result = await esbuild.build({
      entryPoints: [join(dir, "main.ts")],
      bundle: true,
      format: "iife",
      platform: "browser",
      target: "es2022",
      write: false,
      logLevel: "silent",
    });
    const out = result.outputFiles[0];
    if (out === undefined) throw new HttpError(500, "internal", "Bundling the console page produced nothing");
    return Buffer.from(out.contents);
  }
}
