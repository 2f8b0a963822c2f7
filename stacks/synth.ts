/**
 * `npm run synth [-- --stage dev] [--region us-east-1] [--account 123456789012]`
 *
 * Synthesizes every stack offline (no AWS credentials, no network), with real esbuild
 * bundles, and writes:
 *  - dist/cloudformation/<StackName>.json  one CloudFormation template per stack
 *  - dist/cdk.out/                         the full cloud assembly (templates + assets)
 *  - dist/bundles/                         the Lambda bundles
 *  - dist/agents/rotor-agent-<engine>.zip   the customer-side agents, ready to upload
 *  - docs/customer-agent.template.json     the customer template (committed: the doc links it)
 */
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

// sst/credentials.js imports AWS SDK v2, which prints an end-of-support NOTE unless this is
// set before it loads. Synthesis never calls AWS.
process.env.AWS_SDK_JS_SUPPRESS_MAINTENANCE_MODE_MESSAGE ??= "1";
const { bundleHandler, bundles } = await import("./lambda.ts");
const { CUSTOMER_AGENT_STACK, ROOT, synthesize } = await import("./synthesize.ts");
const { AGENTS } = await import("./handlers.ts");
const { zipFiles } = await import("./zip.ts");

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
const agentsDir = path.join(dist, "agents");
for (const dir of [outdir, templatesDir, bundleDir, agentsDir]) fs.rmSync(dir, { recursive: true, force: true });
fs.mkdirSync(templatesDir, { recursive: true });
fs.mkdirSync(agentsDir, { recursive: true });

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
  if (stack.id === CUSTOMER_AGENT_STACK) {
    const doc = path.join(ROOT, "docs", "customer-agent.template.json");
    fs.mkdirSync(path.dirname(doc), { recursive: true });
    fs.writeFileSync(doc, JSON.stringify(stack.template, null, 2) + "\n");
    console.log(`${path.relative(ROOT, doc)}  (copy of the customer template)`);
  }
}
for (const [engine, handler] of Object.entries(AGENTS)) {
  const { dir } = bundleHandler(handler, path.join(bundleDir, "agents", engine));
  const zip = path.join(agentsDir, `rotor-agent-${engine}.zip`);
  fs.writeFileSync(zip, zipFiles([{ name: "index.mjs", data: fs.readFileSync(path.join(dir, "index.mjs")) }]));
  console.log(`${path.relative(ROOT, zip)}  (${(fs.statSync(zip).size / 1024).toFixed(1)} KiB zipped)`);
}
for (const b of bundles.values()) {
  console.log(`  ${b.handler}: ${(b.bytes / 1024).toFixed(1)} KiB  ${path.relative(ROOT, b.dir)}/index.mjs`);
}
console.log(`synthesized ${stacks.length} stack(s) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
