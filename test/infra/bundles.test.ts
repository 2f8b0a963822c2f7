/**
 * The real esbuild bundles: one per handler Rotor ships, each built as `npm run synth`
 * builds it, loaded in a fresh Node process (the @aws-sdk/* imports it leaves to the Lambda
 * runtime resolve from node_modules here), and held to the 1 MB budget. The MySQL agent's
 * bundle leaves out parts of mysql2 (stacks/lambda.ts): it must still do its job against a
 * real MariaDB. Then the bundle-mode synthesis that `npm run synth` runs, which must reuse
 * the same bundles as S3 assets.
 */
import { execFile, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Match, Template } from "aws-cdk-lib/assertions";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey, jwksOf, signRequest, type SigningKey } from "../../core/agent-protocol/keys.ts";
import type { UnsignedRequest } from "../../core/agent-protocol/schemas.ts";
import { AGENTS, allHandlers, API } from "../../stacks/handlers.ts";
import { BUNDLE_BUDGET_BYTES, bundleHandler, bundleSizes } from "../../stacks/lambda.ts";
import { synthesize } from "../../stacks/synthesize.ts";
import { startMariaDb } from "../support/mariadb.ts";
import type { DbServer } from "../support/postgres.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "rotor-infra-bundles-"));
// Bundles must load from a directory that sees node_modules, as /var/task sees the runtime's SDK.
fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(tmp, "node_modules"), "dir");
const bundleDir = path.join(tmp, "bundles");
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const sizes: Array<{ handler: string; bytes: number }> = [];

/** Where `npm run synth` (and synthesize({ code: "bundle" })) puts a Core handler's bundle. */
const coreDir = (spec: string) => path.join(bundleDir, "test-rotor-Core", spec.slice(0, spec.lastIndexOf(".")).replace(/[\\/]/g, "-"));
const agentDir = (spec: string) => path.join(bundleDir, "agents", path.basename(spec));

describe("Lambda bundles", () => {
  it.each(allHandlers())("%s builds, loads, exports its handler, fits the budget", (spec) => {
    const dir = spec.startsWith("functions/agents/") ? agentDir(spec) : coreDir(spec);
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
    expect(bytes).toBeLessThan(BUNDLE_BUDGET_BYTES);
    // Cloud functions import the runtime's AWS SDK rather than bundling a copy (~800 KB).
    if (!spec.startsWith("functions/agents/")) expect(fs.readFileSync(file, "utf8")).toMatch(/from\s*"@aws-sdk\/client-dynamodb"/);
  });

  it("bundleSizes() (what `npm run bench` prints) reports them all", async () => {
    console.log(sizes.map((s) => `${s.handler}: ${(s.bytes / 1024).toFixed(1)} KiB`).join("\n"));
    const reported = await bundleSizes({ dir: path.join(tmp, "bench") });
    expect(reported.map((r) => r.handler)).toEqual(allHandlers());
    for (const r of reported) {
      // Same source, same esbuild options: the same size as built above.
      expect(r.bytes, r.handler).toBe(sizes.find((s) => s.handler === r.handler)!.bytes);
    }
  });
});

/** Runs an ES module `script` in a fresh Node in `tmp` with `input` on stdin; its last stdout line, parsed. */
function inFreshNode(script: string, input: unknown, env: Record<string, string>): Promise<any> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      process.execPath,
      ["--input-type=module", "-e", script],
      { cwd: tmp, env: { PATH: process.env.PATH ?? "", ...env }, encoding: "utf8", timeout: 60_000 },
      (error, stdout, stderr) => {
        // The last lines only: a stack through a minified bundle quotes whole lines of it.
        if (error) return reject(new Error(`exit ${error.code}: ${stderr.split("\n").filter((l) => l.length < 500).slice(-15).join("\n")}`));
        resolve(JSON.parse(stdout.trim().split("\n").pop()!));
      },
    );
    child.stdin!.end(JSON.stringify(input));
  });
}

describe("the MySQL agent bundle against a real MariaDB", () => {
  let db: DbServer;
  let key: SigningKey;
  beforeAll(async () => {
    [db, { key }] = await Promise.all([startMariaDb(), generateSigningKey()]);
    await db.query("CREATE TABLE items (id int)");
  });
  afterAll(() => db?.stop());

  const hex = () => randomBytes(4).toString("hex");
  const target = () => ({ host: db.host, port: db.port, database: db.database });
  const managingUser = () => ({ username: db.adminUser, password: db.adminPassword });

  it("its Lambda handler verifies signed requests against ROTOR_JWKS and manages users", async () => {
    const file = path.join(bundleHandler(AGENTS.mysql, agentDir(AGENTS.mysql)).dir, "index.mjs");
    // A non-ASCII name: CURRENT_USER() comes back through mysql2's UTF-8 decoding.
    const [user, old, next] = [`app_é_${hex()}`, `pw'${hex()}"\\;`, `pw'${hex()}"\\;`];
    const [lease, leasePassword] = [`lease_${hex()}`, `pw'${hex()}"\\;`];
    await db.createLoginUser(user, old);
    const test = (username: string, password: string): UnsignedRequest => ({ type: "testCredentials", body: { ...target(), users: [{ username, password }] } });
    const requests: UnsignedRequest[] = [
      { type: "status", body: {} },
      test(user, old),
      test(user, "wrong"),
      { type: "updateCredential", body: { ...target(), managingUser: managingUser(), rotateUser: { username: user, currentPassword: old, newPassword: next } } },
      {
        type: "createUser",
        body: {
          ...target(),
          managingUser: managingUser(),
          user: { username: lease, password: leasePassword },
          grants: ["GRANT SELECT ON app.items TO {{username}}"],
          expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
        },
      },
      test(lease, leasePassword),
      { type: "deleteUser", body: { ...target(), managingUser: managingUser(), username: lease } },
    ];
    const signed = await Promise.all(requests.map((r) => signRequest(key.privateKey, key.kid, r)));
    const stranger = (await generateSigningKey()).key;
    signed.push(await signRequest(stranger.privateKey, stranger.kid, { type: "status", body: {} }));

    const responses = await inFreshNode(
      `import { readFileSync } from "node:fs";
       const bodies = JSON.parse(readFileSync(0, "utf8"));
       const { handler } = await import(${JSON.stringify(file)});
       const out = [];
       for (const body of bodies) out.push(await handler({ body }));
       console.log(JSON.stringify(out));
       process.exit(0);`,
      signed,
      { ROTOR_JWKS: JSON.stringify(jwksOf(key.publicJwk)) },
    );

    expect(responses).toEqual([
      { status: "ok", body: { type: "ok", engine: "mysql", version: "1" } },
      { status: "ok", body: { type: "valid" } },
      { status: "ok", body: { type: "invalid", reason: expect.stringContaining("Access denied") } },
      { status: "ok", body: { type: "updated" } },
      { status: "ok", body: { type: "created" } },
      { status: "ok", body: { type: "valid" } },
      { status: "ok", body: { type: "deleted", terminatedSessions: 0 } },
      { status: "error", metadata: expect.objectContaining({ code: "unauthorized" }) },
    ]);
    expect(await db.canLogin(user, next)).toBe(true);
    expect(await db.canLogin(user, old)).toBe(false);
    expect(await db.canLogin(lease, leasePassword)).toBe(false);
  });

  it("keeps single-byte code pages; a CJK charset or the RDS SSL profile fails with a clear error", async () => {
    // The real agent always connects in utf8mb4, so it cannot reach what the bundle leaves out:
    // a probe, bundled as an agent is, asks mysql2 for exactly those parts.
    const root = path.join(tmp, "probe-root");
    fs.mkdirSync(path.join(root, "functions/agents"), { recursive: true });
    fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(root, "node_modules"), "dir");
    fs.writeFileSync(
      path.join(root, "functions/agents/probe.ts"),
      `import mysql from "mysql2/promise";
       export async function handler(target: object, options: Record<string, object>) {
         const out: Record<string, unknown> = {};
         for (const [name, extra] of Object.entries(options)) {
           let c: mysql.Connection;
           try {
             c = await mysql.createConnection({ ...target, connectTimeout: 5_000, ...extra });
           } catch (e) {
             out[name] = { error: (e as Error).message };
             continue;
           }
           c.on("error", () => {});
           out[name] = await c.query("SELECT 'Привет' AS v").then(([rows]: any) => ({ value: rows[0].v }), (e: Error) => ({ error: e.message }));
           await c.end().catch(() => c.destroy());
         }
         return out;
       }`,
    );
    const file = path.join(bundleHandler("functions/agents/probe.handler", path.join(tmp, "probe"), root).dir, "index.mjs");
    const login = { ...target(), user: db.adminUser, password: db.adminPassword };
    const result = await inFreshNode(
      `import { readFileSync } from "node:fs";
       const { target, options } = JSON.parse(readFileSync(0, "utf8"));
       const { handler } = await import(${JSON.stringify(file)});
       console.log(JSON.stringify(await handler(target, options)));
       process.exit(0);`,
      { target: login, options: { utf8mb4: { charset: "utf8mb4" }, cp1251: { charset: "cp1251" }, gbk: { charset: "gbk" }, sjis: { charset: "sjis" }, rds: { ssl: "Amazon RDS" } } },
      {},
    );
    expect(result).toEqual({
      utf8mb4: { value: "Привет" },
      cp1251: { value: "Привет" },
      gbk: { error: expect.stringMatching(/^rotor agent: the cp936 code page is not bundled/) },
      sjis: { error: expect.stringMatching(/^rotor agent: the shiftjis code page is not bundled/) },
      rds: { error: 'rotor agent: the "Amazon RDS" SSL profile is not bundled; pass the RDS CA bundle as ssl.ca' },
    });
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
