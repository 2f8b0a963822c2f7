import { Option, type Command } from "commander";
import { clientFor, print, printTable, scopeOf } from "../context.ts";

export function registerTokens(program: Command) {
  const tokens = program.command("tokens").description("service tokens scoped to one config");
  tokens
    .command("create")
    .addOption(new Option("--access <access>", "what the token may do").choices(["read", "read/write"]).default("read"))
    .option("--name <name>", "a label for the token")
    .action(async (opts: { access: string; name?: string }, cmd: Command) => {
      const { project, config } = scopeOf(cmd);
      const out = await clientFor(cmd).request<{ id: string; token: string }>("POST", "/v3/tokens", { body: { project, config, access: opts.access, name: opts.name } });
      process.stderr.write(`token ${out.id} for ${project}/${config} (${opts.access}); it is shown only now:\n`);
      print(out.token);
    });
  tokens.command("list").action(async (_opts, cmd: Command) => {
    const { tokens: rows } = await clientFor(cmd).request<{ tokens: Array<Record<string, unknown>> }>("GET", "/v3/tokens");
    printTable(rows, ["id", "kind", "project", "config", "access", "name", "createdAt", "revokedAt"]);
  });
  tokens.command("revoke <id>").action(async (id: string, _opts, cmd: Command) => {
    await clientFor(cmd).request("DELETE", `/v3/tokens/${encodeURIComponent(id)}`);
    print(`revoked ${id}`);
  });
}
