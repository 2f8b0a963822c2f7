import type { Command } from "commander";
import { ApiClient, CliError, clientOptionsFromEnv } from "./client.ts";

/** Options every command shares; flags override ROTOR_* environment variables. */
export interface GlobalFlags {
  project?: string;
  config?: string;
  apiUrl?: string;
}

export function clientFor(cmd: Command): ApiClient {
  const flags = cmd.optsWithGlobals() as GlobalFlags;
  const opts = clientOptionsFromEnv();
  return new ApiClient({ ...opts, apiUrl: (flags.apiUrl ?? opts.apiUrl).replace(/\/+$/, "") });
}

export function projectOf(cmd: Command): string {
  const p = (cmd.optsWithGlobals() as GlobalFlags).project ?? process.env.ROTOR_PROJECT;
  if (!p) throw new CliError("no project: pass --project or set ROTOR_PROJECT", 2);
  return p;
}

export function scopeOf(cmd: Command): { project: string; config: string } {
  const config = (cmd.optsWithGlobals() as GlobalFlags).config ?? process.env.ROTOR_CONFIG;
  const project = projectOf(cmd);
  if (!config) throw new CliError("no config: pass --config or set ROTOR_CONFIG", 2);
  return { project, config };
}

export const print = (line: string) => process.stdout.write(line.endsWith("\n") ? line : line + "\n");
export const printJson = (value: unknown) => print(JSON.stringify(value, null, 2));

/** Fixed-width columns for list output. */
export function printTable(rows: Array<Record<string, unknown>>, columns: string[]) {
  const cells = [columns, ...rows.map((r) => columns.map((c) => (r[c] === undefined || r[c] === null ? "" : String(r[c]))))];
  const widths = columns.map((_, i) => Math.max(...cells.map((row) => row[i].length)));
  for (const row of cells) print(row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd());
}

/** `3h`, `90m`, `45s` or plain seconds → seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(text.trim());
  if (!m) throw new CliError(`'${text}' is not a duration: use a whole number with s, m, h or d (e.g. 90m)`, 2);
  const seconds = Number(m[1]) * { "": 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as "" | "s" | "m" | "h" | "d"];
  if (seconds <= 0) throw new CliError(`'${text}' must be longer than zero`, 2);
  return seconds;
}
