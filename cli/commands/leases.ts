import type { Command } from "commander";
import { CliError } from "../client.ts";
import { clientFor, parseDuration, print, printJson, printTable, scopeOf } from "../context.ts";

interface LeaseView {
  leaseId: string;
  dynamic: string;
  username?: string;
  state: string;
  expiresAt: string;
  maxExpiresAt: string;
  revokeFailures: number;
  stuck: boolean;
}

const LEASE_ID = /^lease_[A-Za-z0-9]+$/;

function leaseId(id: string): string {
  if (!LEASE_ID.test(id)) throw new CliError(`'${id}' is not a lease id (lease_…): see rotor leases list`, 2);
  return id;
}

export function registerLeases(program: Command) {
  const leases = program.command("leases").description("leased dynamic credentials: list, renew, revoke");

  leases
    .command("list")
    .description("active leases of the config")
    .option("--dynamic <name>", "only this dynamic secret's leases")
    .option("--all", "include revoked leases")
    .option("--json", "print JSON")
    .action(async (opts: { dynamic?: string; all?: boolean; json?: boolean }, cmd: Command) => {
      const query = { ...scopeOf(cmd), dynamic: opts.dynamic, include_revoked: opts.all ? "true" : undefined };
      const out = await clientFor(cmd).request<{ leases: LeaseView[] }>("GET", "/v3/leases", { query });
      if (opts.json) return void printJson(out.leases);
      printTable(
        out.leases.map((l) => ({ ...l, state: l.stuck ? `${l.state} (stuck)` : l.state })),
        ["leaseId", "dynamic", "username", "state", "expiresAt", "revokeFailures"],
      );
    });

  leases
    .command("renew <id>")
    .description("move a lease's expiry to now + TTL (never past its max TTL from creation)")
    .requiredOption("--ttl <duration>", "e.g. 1h, 90m, 300s")
    .action(async (id: string, opts: { ttl: string }, cmd: Command) => {
      const ttlSec = parseDuration(opts.ttl);
      const out = await clientFor(cmd).request<{ lease: LeaseView & { clampedToMaxTtl: boolean } }>("POST", `/v3/leases/${leaseId(id)}/renew`, { body: { ttlSec } });
      print(`renewed ${id} until ${out.lease.expiresAt}`);
      if (out.lease.clampedToMaxTtl) process.stderr.write(`note: capped at the lease's max TTL (${out.lease.maxExpiresAt})\n`);
    });

  leases
    .command("revoke [id]")
    .description("revoke a lease now, or every lease of a dynamic secret with --dynamic")
    .option("--dynamic <name>", "revoke all active leases of this dynamic secret")
    .option("--force", "drop the lease record even if the credential cannot be deleted (prints what may be left behind)")
    .action(async (id: string | undefined, opts: { dynamic?: string; force?: boolean }, cmd: Command) => {
      if (!!id === !!opts.dynamic) throw new CliError("give either a lease id or --dynamic NAME", 2);
      const client = clientFor(cmd);
      if (id) {
        const out = await client.request<{ lease: LeaseView; outcome: string; leftBehind: string | null }>("POST", `/v3/leases/${leaseId(id)}/revoke`, {
          body: opts.force ? { force: true } : {},
        });
        if (out.leftBehind) process.stderr.write(`warning: ${out.leftBehind}: delete it by hand\n`);
        print(`${id}: ${out.outcome.replace("_", " ")}`);
        return;
      }
      const out = await client.request<{ revoked: string[]; failed: Array<{ leaseId: string; message: string }> }>("POST", "/v3/leases/revoke", {
        body: { ...scopeOf(cmd), dynamic: opts.dynamic, ...(opts.force ? { force: true } : {}) },
      });
      for (const l of out.revoked) print(`${l}: revoked`);
      if (out.failed.length > 0) {
        const which = out.failed.map((f) => `${f.leaseId} (${f.message})`).join("; ");
        throw new CliError(`${out.failed.length} of ${out.failed.length + out.revoked.length} leases of ${opts.dynamic} could not be revoked, Rotor retries them at expiry: ${which}`);
      }
      if (out.revoked.length === 0) print(`${opts.dynamic} had no active leases`);
    });
}
