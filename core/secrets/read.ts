import type { Deps } from "../context.ts";
import { listSecrets } from "./static.ts";

export interface ReadOptions {
  actor: string;
  includeDynamic: boolean;
  dynamicTtlSec?: number;
}

export interface ReadEntry {
  value: string;
  version?: number;
  source: "static" | "rotated" | "dynamic";
}

/**
 * A source of a config's values besides static secrets: rotated secrets contribute their
 * active instance, dynamic secrets a fresh lease when asked to.
 */
export type Contributor = (deps: Deps, project: string, config: string, opts: ReadOptions) => Promise<Record<string, ReadEntry>>;

/** Everything a reader of a config sees, by name. Static secrets first; contributors add (never override) names. */
export async function readConfig(
  deps: Deps,
  project: string,
  config: string,
  opts: ReadOptions,
  contributors: Contributor[] = deps.contributors ?? [],
): Promise<Record<string, ReadEntry>> {
  const out: Record<string, ReadEntry> = {};
  for (const s of await listSecrets(deps, project, config)) out[s.name] = { value: s.value, version: s.version, source: "static" };
  for (const contribute of contributors) {
    for (const [name, entry] of Object.entries(await contribute(deps, project, config, opts))) {
      if (!(name in out)) out[name] = entry;
    }
  }
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** `NAME="value"` lines, dotenv-style escapes; `$` is escaped so no reader interpolates it. */
export function toEnvFormat(values: Record<string, string>): string {
  const escape = (v: string) =>
    v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n").replace(/\r/g, "\\r").replace(/\$/g, "\\$");
  return Object.entries(values)
    .map(([k, v]) => `${k}="${escape(v)}"\n`)
    .join("");
}

/** Inverse of toEnvFormat (used by tests and by `rotor run --env-file`-style readers). */
export function parseEnvFormat(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^([A-Z_][A-Z0-9_]*)="((?:[^"\\]|\\.)*)"$/.exec(line);
    if (!m) continue;
    out[m[1]] = m[2].replace(/\\(.)/g, (_, ch: string) => ({ n: "\n", r: "\r" })[ch] ?? ch);
  }
  return out;
}
