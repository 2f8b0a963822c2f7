import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import type * as Esbuild from "esbuild";
import { Duration, Stack } from "aws-cdk-lib";
import type * as dynamodb from "aws-cdk-lib/aws-dynamodb";
import * as iam from "aws-cdk-lib/aws-iam";
import type * as kms from "aws-cdk-lib/aws-kms";
import * as lambda from "aws-cdk-lib/aws-lambda";
import * as logs from "aws-cdk-lib/aws-logs";
import type { Construct } from "constructs";
import { useProject } from "sst/project.js";

/**
 * Rotor's Lambda helper: plain CDK `lambda.Function` (not SST's `Function`, which adds
 * X-Ray `*` permissions, SST_* env vars and SSM bindings) with
 *  - Node 20 on arm64, ESM bundle built by esbuild from the TypeScript handler,
 *  - its own role holding ONLY the statements the caller passes, plus write access to
 *    its own log group (no AWSLambdaBasicExecutionRole, which grants logs:* on `*`),
 *  - its own log group with a retention (default one month).
 *
 * How code is produced is chosen by CDK context, set by stacks/synthesize.ts:
 *  - `rotor:code` = "bundle" (default; what `sst deploy` and `npm run synth` use) or
 *    "placeholder" (inline stub: for tests that only look at the template),
 *  - `rotor:bundleDir` = where bundles are written (default `.sst/rotor-bundles`).
 */

// esbuild is loaded with require(), not `import`: `sst build`/`sst deploy` bundle
// sst.config.ts and the stacks with esbuild, keeping only package.json dependencies
// external, and esbuild (installed through sst) would otherwise be inlined and break.
const esbuild = createRequire(import.meta.url)("esbuild") as typeof Esbuild;

export const CODE_CONTEXT = "rotor:code";
export const BUNDLE_DIR_CONTEXT = "rotor:bundleDir";
export type CodeMode = "bundle" | "placeholder";

export interface RotorFunctionProps {
  /** `<file without extension, relative to the repo root>.<export>`, e.g. `functions/api.handler`. */
  handler: string;
  environment?: Record<string, string>;
  /** Everything the function may do besides writing its own logs. Explicit resources only. */
  statements: iam.PolicyStatement[];
  timeout?: Duration;
  memorySize?: number;
  description?: string;
  logRetention?: logs.RetentionDays;
}

export interface BundleInfo {
  handler: string;
  dir: string;
  bytes: number;
}

/** Bundles built in this process (key: entry + output dir), for reports and reuse. */
export const bundles = new Map<string, BundleInfo>();

export const TABLE_READ_WRITE = [
  "dynamodb:GetItem",
  "dynamodb:PutItem",
  "dynamodb:UpdateItem",
  "dynamodb:DeleteItem",
  "dynamodb:Query",
];
export const KEY_ENVELOPE = ["kms:GenerateDataKey", "kms:Decrypt"];

/** `actions` on the table and all its indexes. */
export function tableStatement(table: dynamodb.ITable, actions: string[]): iam.PolicyStatement {
  return new iam.PolicyStatement({
    effect: iam.Effect.ALLOW,
    actions,
    resources: [table.tableArn, `${table.tableArn}/index/*`],
  });
}

/** `actions` on one KMS key. */
export function keyStatement(key: kms.IKey, actions: string[]): iam.PolicyStatement {
  return new iam.PolicyStatement({ effect: iam.Effect.ALLOW, actions, resources: [key.keyArn] });
}

/** Rejects `*` resources and wildcard actions: every grant names what it touches. */
export function assertLeastPrivilege(id: string, statements: iam.PolicyStatement[]): void {
  for (const s of statements) {
    const json = s.toStatementJson() as { Action?: string | string[]; Resource?: string | string[] };
    const actions = ([] as string[]).concat(json.Action ?? []);
    const resources = ([] as string[]).concat(json.Resource ?? []);
    if (s.effect !== iam.Effect.ALLOW) continue;
    if (s.notActions.length || s.notResources.length) {
      throw new Error(`${id}: NotAction/NotResource statements are not allowed`);
    }
    if (resources.length === 0 || resources.some((r) => r === "*")) {
      throw new Error(`${id}: statement for ${actions.join(", ")} must name its resources (no "*")`);
    }
    if (actions.length === 0 || actions.some((a) => a.includes("*"))) {
      throw new Error(`${id}: statement must list explicit actions (got ${actions.join(", ")})`);
    }
  }
}

export function rotorFunction(scope: Construct, id: string, props: RotorFunctionProps): lambda.Function {
  assertLeastPrivilege(id, props.statements);

  const role = new iam.Role(scope, `${id}Role`, {
    assumedBy: new iam.ServicePrincipal("lambda.amazonaws.com"),
    description: `Rotor ${id} (${props.handler})`,
  });
  for (const statement of props.statements) role.addToPrincipalPolicy(statement);

  const logGroup = new logs.LogGroup(scope, `${id}Logs`, {
    retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
  });
  logGroup.grantWrite(role);

  const { code, handler } = functionCode(scope, props.handler);
  return new lambda.Function(scope, id, {
    runtime: lambda.Runtime.NODEJS_20_X,
    architecture: lambda.Architecture.ARM_64,
    handler,
    code,
    role,
    logGroup,
    environment: props.environment,
    timeout: props.timeout ?? Duration.seconds(30),
    memorySize: props.memorySize ?? 512,
    description: props.description,
  });
}

function functionCode(scope: Construct, spec: string): { code: lambda.Code; handler: string } {
  const dot = spec.lastIndexOf(".");
  if (dot <= 0) throw new Error(`handler "${spec}" must look like "functions/api.handler"`);
  const file = spec.slice(0, dot);
  const exportName = spec.slice(dot + 1);
  const mode = (scope.node.tryGetContext(CODE_CONTEXT) ?? "bundle") as CodeMode;

  if (mode === "placeholder") {
    // Inline code is written as index.js (CommonJS). Never deployed: tests only.
    return {
      code: lambda.Code.fromInline(
        `exports.${exportName} = async () => ({ statusCode: 503, body: "placeholder for ${file}" });`,
      ),
      handler: `index.${exportName}`,
    };
  }
  if (mode !== "bundle") throw new Error(`unknown ${CODE_CONTEXT} "${mode}"`);

  const root = useProject().paths.root;
  const bundleRoot =
    (scope.node.tryGetContext(BUNDLE_DIR_CONTEXT) as string | undefined) ??
    path.join(useProject().paths.out, "rotor-bundles");
  const dir = path.join(bundleRoot, Stack.of(scope).stackName, file.replace(/[\\/]/g, "-"));
  bundle(root, file, dir, spec);
  return { code: lambda.Code.fromAsset(dir), handler: `index.${exportName}` };
}

function bundle(root: string, file: string, dir: string, spec: string): void {
  const key = `${file}\u0000${dir}`;
  if (bundles.has(key)) return;
  const entry = [".ts", ".mts", ".js", ".mjs"]
    .map((ext) => path.join(root, file + ext))
    .find((candidate) => fs.existsSync(candidate));
  if (!entry) throw new Error(`handler "${spec}": no ${file}.ts/.mts/.js/.mjs under ${root}`);

  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const outfile = path.join(dir, "index.mjs");
  const result = esbuild.buildSync({
    entryPoints: [entry],
    outfile,
    absWorkingDir: root,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "esm",
    mainFields: ["module", "main"],
    minify: true,
    keepNames: true,
    legalComments: "none",
    logLevel: "silent",
    // Optional native add-on that `pg` requires lazily; never used in Lambda.
    external: ["pg-native"],
    // CommonJS dependencies call require() for Node built-ins: give the ESM bundle one.
    banner: {
      js: `import { createRequire as __rotorCreateRequire } from "node:module";const require = __rotorCreateRequire(import.meta.url);`,
    },
  });
  if (result.errors.length) {
    throw new Error(`bundling ${spec} failed:\n${result.errors.map((e) => e.text).join("\n")}`);
  }
  bundles.set(key, { handler: spec, dir, bytes: fs.statSync(outfile).size });
}
