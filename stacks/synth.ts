/**
 * `npm run synth [-- --stage dev] [--region us-east-1] [--account 123456789012]`
 *
 * Synthesizes every stack offline (no AWS credentials, no network), with real esbuild
 * bundles, and writes:
 *  - dist/cloudformation/<StackName>.json  one CloudFormation template per stack
 *  - dist/cdk.out/                         the full cloud assembly (templates + assets)
 *  - dist/bundles/                         the Lambda bundles
 */
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

// sst/credentials.js imports AWS SDK v2, which prints an end-of-support NOTE unless this is
// set before it loads. Synthesis never calls AWS.
process.env.AWS_SDK_JS_SUPPRESS_MAINTENANCE_MODE_MESSAGE ??= "1";
const { bundles } = await import("./lambda.ts");
const { ROOT, synthesize } = await import("./synthesize.ts");

const { values } = parseArgs({
  options: {
    stage: { type: "string", default: process.env.SST_STAGE ?? "dev" },
    region: { type: "string" },
    account: { type: "string" },
  },
});

const started = Date.now();
const dist = path.join(ROOT, "dist");
const outdir = path.join(dist, "cdk.out");
const templatesDir = path.join(dist, "cloudformation");
const bundleDir = path.join(dist, "bundles");
for (const dir of [outdir, templatesDir, bundleDir]) fs.rmSync(dir, { recursive: true, force: true });
fs.mkdirSync(templatesDir, { recursive: true });

const { stacks } = await synthesize({
  stage: values.stage!,
  region: values.region,
  account: values.account,
  code: "bundle",
  bundleDir,
  outdir,
});

for (const stack of stacks) {
  const file = path.join(templatesDir, `${stack.stackName}.json`);
  fs.writeFileSync(file, JSON.stringify(stack.template, null, 2) + "\n");
  const resources = Object.keys((stack.template.Resources ?? {}) as object).length;
  console.log(`${path.relative(ROOT, file)}  (${resources} resources)`);
}
for (const b of bundles.values()) {
  console.log(`  ${b.handler}: ${(b.bytes / 1024).toFixed(1)} KiB  ${path.relative(ROOT, b.dir)}/index.mjs`);
}
console.log(`synthesized ${stacks.length} stack(s) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
