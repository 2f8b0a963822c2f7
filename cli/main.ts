import { Command, CommanderError } from "commander";
import { CliError } from "./client.ts";
import { registerProjects } from "./commands/projects.ts";
import { registerSecrets } from "./commands/secrets.ts";
import { registerRun } from "./commands/run.ts";
import { registerTokens } from "./commands/tokens.ts";
import { extraCommands } from "./commands/index.ts";

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";

const program = new Command("rotor")
  .description("Rotor: secrets that rotate themselves and credentials that expire")
  .option("-p, --project <project>", "project (default: $ROTOR_PROJECT)")
  .option("-c, --config <config>", "config (default: $ROTOR_CONFIG)")
  .option("--api-url <url>", "Rotor API (default: $ROTOR_API_URL or http://127.0.0.1:8787)")
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) });

registerProjects(program);
registerSecrets(program);
registerRun(program);
registerTokens(program);
for (const register of extraCommands) register(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    process.exitCode = e.exitCode === 0 ? 0 : 2; // commander already printed its one line
  } else if (e instanceof CliError) {
    process.stderr.write(`rotor: ${e.message}\n`);
    process.exitCode = e.exitCode;
  } else {
    process.stderr.write(`rotor: unexpected error: ${(e as Error).message}\n`);
    process.exitCode = 1;
  }
}
