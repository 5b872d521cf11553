/** Whether the product pieces a bench section needs are in the tree yet. */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** A public symbol a section needs, and the entry file that must export it. */
export interface Requirement {
  /** Path from the repository root, e.g. `src/index.ts`. */
  entry: string;
  symbols: readonly string[];
}

const root = new URL("../../", import.meta.url);

/**
 * Resolves with `undefined` when every requirement is met, otherwise with the reason the
 * section reports instead of a figure ("WorkerPool not yet available (src/index.ts)").
 */
export async function missingPieces(requirements: readonly Requirement[]): Promise<string | undefined> {
  const missing: string[] = [];
  for (const req of requirements) {
    const url = new URL(req.entry, root);
    if (!existsSync(fileURLToPath(url))) {
      missing.push(`${req.symbols.join(", ")} (${req.entry} missing)`);
      continue;
    }
    let mod: Record<string, unknown>;
    try {
      mod = (await import(url.href)) as Record<string, unknown>;
    } catch (err) {
      missing.push(`${req.entry} fails to load: ${(err as Error).message.split("\n")[0]}`);
      continue;
    }
    const absent = req.symbols.filter((s) => mod[s] === undefined);
    if (absent.length > 0) missing.push(`${absent.join(", ")} (not exported by ${req.entry})`);
  }
  return missing.length === 0 ? undefined : `${missing.join("; ")} not yet available`;
}
