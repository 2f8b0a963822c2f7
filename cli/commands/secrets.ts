import { chmodSync, existsSync, writeFileSync } from "node:fs";
import { Option, type Command } from "commander";
import { CliError, type ApiClient } from "../client.ts";
import { clientFor, parseDuration, print, printTable, scopeOf } from "../context.ts";

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8").replace(/\r?\n$/, "");
}

/** The config's values as the API serves them, leasing dynamic secrets when a TTL is asked for. */
export async function downloadValues(client: ApiClient, scope: { project: string; config: string }, dynamicTtl?: string, format: "json" | "env" = "json") {
  const query = {
    ...scope,
    format,
    include_dynamic_secrets: dynamicTtl !== undefined ? true : undefined,
    dynamic_secrets_ttl_sec: dynamicTtl !== undefined ? parseDuration(dynamicTtl) : undefined,
  };
  return client.request<string>("GET", "/v3/configs/config/secrets/download", { query, raw: true });
}

export function registerSecrets(program: Command) {
  const secrets = program.command("secrets").description("read and change a config's secrets");

  secrets
    .command("set <assignments...>")
    .description("set KEY=VALUE pairs; a lone KEY reads its value from standard input")
    .action(async (assignments: string[], _opts, cmd: Command) => {
      const changes: Record<string, string> = {};
      const fromStdin = assignments.filter((a) => !a.includes("="));
      if (fromStdin.length > 1) throw new CliError("only one KEY can read its value from standard input", 2);
      for (const a of assignments) {
        const i = a.indexOf("=");
        if (i > 0) changes[a.slice(0, i)] = a.slice(i + 1);
        else if (i === 0) throw new CliError(`'${a.split("=")[0]}=…' has no name before '='`, 2);
      }
      if (fromStdin.length === 1) {
        if (process.stdin.isTTY) throw new CliError(`no value for ${fromStdin[0]}: use ${fromStdin[0]}=VALUE or pipe the value in`, 2);
        changes[fromStdin[0]] = await readStdin();
      }
      const out = await clientFor(cmd).request<{ changed: Array<{ name: string; version: number }> }>("POST", "/v3/configs/config/secrets", {
        body: { ...scopeOf(cmd), secrets: changes },
      });
      for (const c of out.changed) print(`${c.name} set (version ${c.version})`);
    });

  secrets
    .command("get <name>")
    .description("print one secret's value")
    .action(async (name: string, _opts, cmd: Command) => {
      const out = await clientFor(cmd).request<{ value: { raw: string } }>("GET", "/v3/configs/config/secret", { query: { ...scopeOf(cmd), name } });
      process.stdout.write(out.value.raw + "\n");
    });

  secrets.command("delete <names...>").action(async (names: string[], _opts, cmd: Command) => {
    const out = await clientFor(cmd).request<{ changed: Array<{ name: string }> }>("POST", "/v3/configs/config/secrets", {
      body: { ...scopeOf(cmd), secrets: Object.fromEntries(names.map((n) => [n, null])) },
    });
    const deleted = new Set(out.changed.map((c) => c.name));
    for (const n of names) print(deleted.has(n) ? `${n} deleted` : `${n} did not exist`);
  });

  secrets
    .command("list")
    .option("--values", "show values too")
    .action(async (opts: { values?: boolean }, cmd: Command) => {
      const out = await clientFor(cmd).request<{ secrets: Record<string, { raw: string; version?: number; source: string }> }>("GET", "/v3/configs/config/secrets", {
        query: scopeOf(cmd),
      });
      const rows = Object.entries(out.secrets).map(([name, s]) => ({ name, version: s.version, source: s.source, value: s.raw }));
      printTable(rows, opts.values ? ["name", "version", "source", "value"] : ["name", "version", "source"]);
    });

  secrets
    .command("download")
    .description("download the config's values (to rotor.json unless --no-file)")
    .addOption(new Option("--format <format>", "output format").choices(["json", "env"]).default("json"))
    .option("--no-file", "print to standard output instead of writing a file")
    .option("--output <path>", "file to write", "rotor.json")
    .option("--dynamic-ttl <duration>", "lease dynamic secrets for this long (e.g. 3h, 90m)")
    .action(async (opts: { format: "json" | "env"; file: boolean; output: string; dynamicTtl?: string }, cmd: Command) => {
      const text = await downloadValues(clientFor(cmd), scopeOf(cmd), opts.dynamicTtl, opts.format);
      const body = opts.format === "json" ? JSON.stringify(JSON.parse(text), null, 2) + "\n" : text;
      if (!opts.file) return void process.stdout.write(body);
      try {
        // An existing file keeps its mode on write: make it 0600 before the values go in.
        if (existsSync(opts.output)) chmodSync(opts.output, 0o600);
        writeFileSync(opts.output, body, { mode: 0o600 });
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        throw new CliError(`cannot write ${opts.output}: ${err.code === "ENOENT" ? "its directory does not exist" : err.code ?? err.message}`, 1);
      }
      process.stderr.write(`wrote ${opts.output}\n`);
    });

  return secrets;
}

export { printTable };
