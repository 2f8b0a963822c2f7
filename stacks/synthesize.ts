import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Aws } from "aws-cdk-lib";
import type { CloudAssembly } from "aws-cdk-lib/cx-api";
// App.js directly: the "sst/constructs" barrel also loads every other construct (~1.5 s).
import { App } from "sst/constructs/App.js";
import type { SSTConfig } from "sst";
import { initProject, useProject } from "sst/project.js";
import { CustomerAgentStack } from "./CustomerAgent.ts";
import { BUNDLE_DIR_CONTEXT, CODE_CONTEXT, type CodeMode } from "./lambda.ts";

/** Id of the customer-side template among the synthesized stacks. */
export const CUSTOMER_AGENT_STACK = "CustomerAgent";

/**
 * Offline synthesis of every stack in sst.config.ts, plus the customer-side agent template,
 * without AWS credentials. Used by
 * `npm run synth` (stacks/synth.ts) and by the infra tests, so both see the same templates.
 *
 * It follows what `sst build` does (sst/stacks/synth.js) minus the AWS calls:
 *  - initProject() loads sst.config.ts (SST bundles it with esbuild, `stacks` stripped);
 *  - the account is the `AWS::AccountId` pseudo parameter unless one is given, since there
 *    is no STS identity to ask; the region comes from the config (or `region`);
 *  - App.finish() calls useBootstrap() (CloudFormation DescribeStacks) for every stack
 *    unless `isRunningSSTTest()`, which only reads NODE_ENV === "test"; OfflineApp answers
 *    true instead, so no environment variable has to be set. That branch only uploads
 *    sourcemaps of SST `Function`s, which Rotor does not use (stacks/lambda.ts).
 */
export interface SynthesizeOptions {
  stage: string;
  region?: string;
  /** 12-digit account id; default: the `AWS::AccountId` pseudo parameter (env-agnostic). */
  account?: string;
  /** "bundle" (default) builds real esbuild bundles; "placeholder" uses inline stubs. */
  code?: CodeMode;
  /** Where esbuild bundles go; default `.sst/rotor-bundles`. */
  bundleDir?: string;
  /** Cloud assembly directory; default: a fresh temp dir (CDK's default). */
  outdir?: string;
  /** Also synthesize the customer-side agent template (stacks/CustomerAgent.ts); default true. */
  customerAgent?: boolean;
}

export interface SynthesizedStack {
  /** Id in sst.config.ts, e.g. "Core". */
  id: string;
  /** CloudFormation stack name, e.g. "dev-rotor-Core". */
  stackName: string;
  template: Record<string, unknown>;
}

export interface Synthesized {
  app: App;
  assembly: CloudAssembly;
  stacks: SynthesizedStack[];
}

export const ROOT = fileURLToPath(new URL("..", import.meta.url));

class OfflineApp extends App {
  override isRunningSSTTest(): boolean {
    return true;
  }
}

export async function synthesize(options: SynthesizeOptions): Promise<Synthesized> {
  await initProject({ stage: options.stage, region: options.region, root: ROOT });
  const project = useProject();
  const config = (await import(pathToFileURL(path.join(ROOT, "sst.config.ts")).href)) as { default: SSTConfig };

  const context: Record<string, unknown> = {
    // As `sst build`: no aws:cdk:path metadata in templates.
    "aws:cdk:enable-path-metadata": false,
    [CODE_CONTEXT]: options.code ?? "bundle",
  };
  if (options.bundleDir) context[BUNDLE_DIR_CONTEXT] = options.bundleDir;

  const app = new OfflineApp(
    {
      mode: "deploy",
      stage: project.config.stage,
      name: project.config.name,
      region: project.config.region ?? "us-east-1",
      account: options.account ?? Aws.ACCOUNT_ID,
    },
    { outdir: options.outdir, context },
  );
  await config.default.stacks(app);
  // Not in sst.config.ts: `sst deploy` must not put the customer's agent in Rotor's account.
  if (options.customerAgent !== false) new CustomerAgentStack(app, app.logicalPrefixedName(CUSTOMER_AGENT_STACK));
  await app.finish();
  const assembly = app.synth();

  const errors = assembly.stacks.flatMap((s) =>
    s.messages.filter((m) => m.level === "error").map((m) => `${s.stackName} ${m.id}: ${String(m.entry.data)}`),
  );
  if (errors.length) throw new Error(`synthesis reported errors:\n${errors.join("\n")}`);

  const stacks = assembly.stacks.map((s) => ({
    id: s.stackName.slice(`${app.stage}-${app.name}-`.length),
    stackName: s.stackName,
    template: s.template as Record<string, unknown>,
  }));
  return { app, assembly, stacks };
}
