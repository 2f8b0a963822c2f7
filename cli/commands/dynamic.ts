import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { CliError } from "../client.ts";
import { clientFor, print, printJson, printTable, scopeOf, type GlobalFlags } from "../context.ts";

interface DynamicView {
  name: string;
  provider: string;
  defaultTtlSec: number;
  maxTtlSec: number;
  maxLeases: number;
  activeLeases: number;
  createdAt: string;
}

const PROVIDERS = ["aws-iam-user", "postgres", "mysql"];

async function readSpec(file: string): Promise<Record<string, unknown>> {
  let text: string;
  const source = file === "-" ? "standard input" : file;
  if (file === "-") {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    text = Buffer.concat(chunks).toString("utf8");
  } else {
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      throw new CliError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 2);
    }
  }
  let spec: unknown;
  try {
    spec = JSON.parse(text);
  } catch {
    throw new CliError(`${source} is not valid JSON`, 2);
  }
  if (!spec || typeof spec !== "object" || Array.isArray(spec)) throw new CliError(`${source} must hold a JSON object`, 2);
  return spec as Record<string, unknown>;
}

/** Seconds as the shortest exact unit: 1800 → 30m. */
export function formatDuration(sec: number): string {
  for (const [unit, n] of [["d", 86400], ["h", 3600], ["m", 60]] as const) if (sec % n === 0) return `${sec / n}${unit}`;
  return `${sec}s`;
}

export function registerDynamic(program: Command) {
  const dynamic = program.command("dynamic").description("dynamic secrets: credentials leased per read, revoked at expiry");

  dynamic
    .command("create [name]")
    .description("create a dynamic secret from a JSON spec; the integration is checked first")
    .option("--provider <provider>", `one of ${PROVIDERS.join(", ")}`)
    .requiredOption("--file <path>", "spec file, or - for standard input")
    .action(async (name: string | undefined, opts: { provider?: string; file: string }, cmd: Command) => {
      if (opts.provider && !PROVIDERS.includes(opts.provider)) throw new CliError(`unknown provider '${opts.provider}': use one of ${PROVIDERS.join(", ")}`, 2);
      const spec = await readSpec(opts.file);
      const flags = cmd.optsWithGlobals() as GlobalFlags;
      // Flags and the environment say where it goes; the file only fills in what they don't.
      const body = {
        ...spec,
        name: name ?? spec.name,
        provider: opts.provider ?? spec.provider,
        project: flags.project ?? process.env.ROTOR_PROJECT ?? spec.project,
        config: flags.config ?? process.env.ROTOR_CONFIG ?? spec.config,
      };
      if (!body.name) throw new CliError("no name: pass NAME or put \"name\" in the spec", 2);
      if (!body.provider) throw new CliError(`no provider: pass --provider ${PROVIDERS.join("|")}`, 2);
      if (!body.project || !body.config) throw new CliError("no project/config: pass --project and --config or set ROTOR_PROJECT and ROTOR_CONFIG", 2);
      const out = await clientFor(cmd).request<{ dynamicSecret: DynamicView }>("POST", "/v3/configs/config/dynamic_secrets", { body });
      const d = out.dynamicSecret;
      print(`created dynamic secret ${d.name} (${d.provider}): default TTL ${formatDuration(d.defaultTtlSec)}, max TTL ${formatDuration(d.maxTtlSec)}, at most ${d.maxLeases} active leases`);
    });

  dynamic
    .command("list")
    .option("--json", "print JSON")
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const out = await clientFor(cmd).request<{ dynamicSecrets: DynamicView[] }>("GET", "/v3/configs/config/dynamic_secrets", { query: scopeOf(cmd) });
      if (opts.json) return void printJson(out.dynamicSecrets);
      printTable(
        out.dynamicSecrets.map((d) => ({ ...d, defaultTtl: formatDuration(d.defaultTtlSec), maxTtl: formatDuration(d.maxTtlSec) })),
        ["name", "provider", "defaultTtl", "maxTtl", "activeLeases", "maxLeases", "createdAt"],
      );
    });

  dynamic
    .command("get <name>")
    .description("print a dynamic secret's settings as JSON (never its credentials)")
    .action(async (name: string, _opts, cmd: Command) => {
      const out = await clientFor(cmd).request<{ dynamicSecrets: DynamicView[] }>("GET", "/v3/configs/config/dynamic_secrets", { query: { ...scopeOf(cmd), name } });
      printJson(out.dynamicSecrets[0]);
    });

  dynamic
    .command("delete <name>")
    .description("delete a dynamic secret (refused while it has active leases)")
    .action(async (name: string, _opts, cmd: Command) => {
      await clientFor(cmd).request("DELETE", "/v3/configs/config/dynamic_secret", { query: { ...scopeOf(cmd), name } });
      print(`deleted dynamic secret ${name}`);
    });
}
