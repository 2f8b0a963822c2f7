import type { Command } from "commander";
import type { Webhook as WebhookModel } from "../../core/webhooks/model.ts";
import { CliError } from "../client.ts";
import { clientFor, print, printJson, printTable, projectOf, type GlobalFlags } from "../context.ts";

// The API's view of a webhook (its secret is never in it after creation).
type Webhook = Omit<WebhookModel, "createdBy">;

const show = (w: Webhook) => ({ ...w, events: w.events.length ? w.events.join(",") : "all", config: w.config ?? "all" });

export function registerWebhooks(program: Command) {
  const webhooks = program.command("webhooks").description("signed HTTP callbacks for a project's events");
  webhooks
    .command("add <url>")
    .description("add a webhook to the project (--project); prints its signing secret, once")
    .option("--events <types>", "comma-separated event types or groups (e.g. rotation.succeeded,secrets.*); default: all")
    .option("--json", "print the webhook and its secret as JSON")
    .action(async (url: string, opts: { events?: string; json?: boolean }, cmd: Command) => {
      const project = projectOf(cmd);
      // Only an explicit --config narrows a webhook: a ROTOR_CONFIG left in the shell should not.
      const config = (cmd.optsWithGlobals() as GlobalFlags).config;
      const events = opts.events
        ?.split(",")
        .map((s) => s.trim())
        .filter(Boolean);
      if (opts.events !== undefined && !events?.length) throw new CliError("--events needs at least one event type", 2);
      const out = await clientFor(cmd).request<{ webhook: Webhook; secret: string }>("POST", "/v3/webhooks", { body: { project, url, events, config } });
      if (opts.json) {
        printJson(out);
        return;
      }
      const w = show(out.webhook);
      process.stderr.write(`webhook ${w.id} for ${w.project} (events: ${w.events}; configs: ${w.config}); its signing secret is shown only now:\n`);
      print(out.secret);
    });
  webhooks
    .command("list")
    .description("webhooks of the project given with --project, or of every project")
    .action(async (_opts, cmd: Command) => {
      const project = (cmd.optsWithGlobals() as GlobalFlags).project ?? process.env.ROTOR_PROJECT;
      const { webhooks: rows } = await clientFor(cmd).request<{ webhooks: Webhook[] }>("GET", "/v3/webhooks", { query: { project } });
      printTable(rows.map(show), ["id", "project", "config", "events", "url", "createdAt"]);
    });
  webhooks.command("remove <id>").action(async (id: string, _opts, cmd: Command) => {
    await clientFor(cmd).request("DELETE", `/v3/webhooks/${encodeURIComponent(id)}`);
    print(`removed ${id}`);
  });
  webhooks
    .command("deliveries <id>")
    .description("the delivery log: one line per attempt, newest first")
    .option("--limit <n>", "how many attempts", "50")
    .option("--json", "print the log as JSON")
    .action(async (id: string, opts: { limit: string; json?: boolean }, cmd: Command) => {
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 500) throw new CliError(`--limit must be a whole number from 1 to 500, not '${opts.limit}'`, 2);
      const out = await clientFor(cmd).request<{ deliveries: Array<Record<string, unknown>> }>("GET", `/v3/webhooks/${encodeURIComponent(id)}/deliveries`, { query: { limit } });
      if (opts.json) {
        printJson(out.deliveries);
        return;
      }
      printTable(out.deliveries, ["at", "deliveryId", "eventType", "attempt", "status", "httpStatus", "durationMs", "error"]);
    });
}
