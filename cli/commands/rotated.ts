import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { CliError, type ApiClient } from "../client.ts";
import { clientFor, print, printJson, printTable, scopeOf } from "../context.ts";

interface RotatedView {
  name: string;
  provider: string;
  strategy: string;
  state: string;
  activeUsername: string;
  lastFlipAt: string | null;
  nextFlipAt: string | null;
  failureCount: number;
}

async function readStdinText(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function readSpecFile(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw new CliError(`cannot read ${path}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (e as Error).message}`, 2);
  }
}

function parseSpec(text: string, source: string): Record<string, unknown> {
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new CliError(`${source} is not valid JSON`, 2);
  }
}

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "ABORTED", "TIMED_OUT"]);

/** Polls an execution until it ends; prints its status and fails the command unless it succeeded. */
export async function waitForExecution(client: ApiClient, id: string, timeoutSec: number) {
  const deadline = Date.now() + timeoutSec * 1000;
  for (;;) {
    const { execution } = await client.request<{ execution: { status: string; error?: string; cause?: string } }>("GET", `/v3/executions/${encodeURIComponent(id)}`);
    if (TERMINAL.has(execution.status)) {
      if (execution.status !== "SUCCEEDED") throw new CliError(`execution ${id} ${execution.status.toLowerCase()}: ${execution.error ?? ""} ${execution.cause ?? ""}`.trim());
      return execution;
    }
    if (Date.now() > deadline) throw new CliError(`execution ${id} still running after ${timeoutSec}s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export function registerRotated(program: Command) {
  const rotated = program.command("rotated").description("secrets Rotor rotates on a schedule");

  rotated
    .command("create")
    .description("create a rotated secret from a JSON spec (see README)")
    .requiredOption("--file <path>", "spec file, or - for standard input")
    .option("--schedule <expression>", 'AWS Scheduler syntax: "rate(12 hours)" or "cron(0 8 ? * MON-FRI *)"')
    .action(async (opts: { file: string; schedule?: string }, cmd: Command) => {
      const spec = parseSpec(opts.file === "-" ? await readStdinText() : readSpecFile(opts.file), opts.file === "-" ? "standard input" : opts.file);
      const flags = cmd.optsWithGlobals() as { project?: string; config?: string };
      const body = {
        ...spec,
        project: flags.project ?? spec.project ?? process.env.ROTOR_PROJECT,
        config: flags.config ?? spec.config ?? process.env.ROTOR_CONFIG,
        ...(opts.schedule ? { schedule: opts.schedule, intervalDays: undefined } : {}),
      };
      const out = await clientFor(cmd).request<{ rotatedSecret: RotatedView }>("POST", "/v3/configs/config/rotated_secrets", { body });
      print(`created rotated secret ${out.rotatedSecret.name}: active ${out.rotatedSecret.activeUsername}, next flip ${out.rotatedSecret.nextFlipAt}`);
    });

  rotated
    .command("list")
    .option("--json", "print JSON")
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const out = await clientFor(cmd).request<{ rotatedSecrets: RotatedView[] }>("GET", "/v3/configs/config/rotated_secrets", { query: scopeOf(cmd) });
      if (opts.json) {
        printJson(out.rotatedSecrets);
        return;
      }
      printTable(out.rotatedSecrets as never, ["name", "provider", "state", "activeUsername", "lastFlipAt", "nextFlipAt", "failureCount"]);
    });

  rotated.command("get <name>").action(async (name: string, _opts, cmd: Command) => {
    const out = await clientFor(cmd).request<{ rotatedSecrets: RotatedView[] }>("GET", "/v3/configs/config/rotated_secrets", { query: { ...scopeOf(cmd), name } });
    printJson(out.rotatedSecrets[0]);
  });

  rotated
    .command("rotate <name>")
    .description("flip now (restarts the interval); prints the execution id")
    .option("--wait", "wait for the flip to end")
    .option("--timeout <seconds>", "with --wait: give up after this long", "300")
    .action(async (name: string, opts: { wait?: boolean; timeout: string }, cmd: Command) => {
      const client = clientFor(cmd);
      const { executionId } = await client.request<{ executionId: string }>("POST", "/v3/configs/config/rotated_secrets/rotate", { body: { ...scopeOf(cmd), name } });
      print(executionId);
      if (opts.wait) {
        await waitForExecution(client, executionId, Number(opts.timeout));
        process.stderr.write(`flip of ${name} succeeded\n`);
      }
    });

  rotated
    .command("resume <name>")
    .description("resume a paused rotation; new passwords are read from standard input, one per line")
    .option("--password1-stdin", "read the first user's current password from standard input")
    .option("--password2-stdin", "read the second user's current password (after the first, if both)")
    .action(async (name: string, opts: { password1Stdin?: boolean; password2Stdin?: boolean }, cmd: Command) => {
      let passwords: [string | null, string | null] | undefined;
      if (opts.password1Stdin || opts.password2Stdin) {
        const lines = (await readStdinText()).split(/\r?\n/);
        const p1 = opts.password1Stdin ? lines.shift() : undefined;
        const p2 = opts.password2Stdin ? lines.shift() : undefined;
        if ((opts.password1Stdin && !p1) || (opts.password2Stdin && !p2)) throw new CliError("expected one password per line on standard input", 2);
        passwords = [p1 ?? null, p2 ?? null];
      }
      const out = await clientFor(cmd).request<{ rotatedSecret: RotatedView }>("POST", "/v3/configs/config/rotated_secrets/resume", { body: { ...scopeOf(cmd), name, passwords } });
      print(`resumed ${name}: ${out.rotatedSecret.state}, next flip ${out.rotatedSecret.nextFlipAt}`);
    });

  rotated.command("delete <name>").description("stop rotating (the database users are left alone)").action(async (name: string, _opts, cmd: Command) => {
    await clientFor(cmd).request("DELETE", "/v3/configs/config/rotated_secret", { query: { ...scopeOf(cmd), name } });
    print(`deleted rotated secret ${name}`);
  });

  const executions = program.command("executions").description("workflow executions and their histories");
  executions
    .command("list")
    .option("--secret <name>", "only this rotated secret's flips (needs --project and --config)")
    .option("--limit <n>", "how many", "20")
    .action(async (opts: { secret?: string; limit: string }, cmd: Command) => {
      const query = opts.secret ? { ...scopeOf(cmd), secret: opts.secret, limit: opts.limit } : { limit: opts.limit };
      const out = await clientFor(cmd).request<{ executions: Array<Record<string, unknown>> }>("GET", "/v3/executions", { query });
      printTable(out.executions, ["id", "machine", "status", "startedAt", "stoppedAt", "error"]);
    });
  executions.command("history <id>").action(async (id: string, _opts, cmd: Command) => {
    const out = await clientFor(cmd).request<{ events: Array<Record<string, unknown>> }>("GET", `/v3/executions/${encodeURIComponent(id)}/history`);
    printTable(out.events, ["id", "timestamp", "type", "stateName", "error", "cause"]);
  });
}
