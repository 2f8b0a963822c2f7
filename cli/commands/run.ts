import { spawn } from "node:child_process";
import { constants } from "node:os";
import type { Command } from "commander";
import { CliError } from "../client.ts";
import { clientFor, scopeOf } from "../context.ts";
import { downloadValues } from "./secrets.ts";

const FORWARDED: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"];

export function registerRun(program: Command) {
  program
    .command("run")
    .description("run a command with the config's secrets in its environment")
    .option("--dynamic-ttl <duration>", "lease dynamic secrets for this long (e.g. 90m)")
    .argument("<command...>", "the command and its arguments, after --")
    .action(async (argv: string[], opts: { dynamicTtl?: string }, cmd: Command) => {
      const values = JSON.parse(await downloadValues(clientFor(cmd), scopeOf(cmd), opts.dynamicTtl)) as Record<string, string>;
      const child = spawn(argv[0], argv.slice(1), { stdio: "inherit", env: { ...process.env, ...values } });
      const forward = (signal: NodeJS.Signals) => child.kill(signal);
      for (const s of FORWARDED) process.on(s, forward);
      const code = await new Promise<number>((resolve, reject) => {
        child.once("error", (e: NodeJS.ErrnoException) =>
          reject(new CliError(e.code === "ENOENT" ? `command not found: ${argv[0]}` : `cannot run ${argv[0]}: ${e.message}`, 127)),
        );
        child.once("exit", (exitCode, signal) => resolve(exitCode ?? 128 + (signal ? constants.signals[signal] : 1)));
      });
      for (const s of FORWARDED) process.off(s, forward);
      process.exitCode = code;
    });
}
