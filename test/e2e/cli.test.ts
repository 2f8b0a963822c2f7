/**
 * The real `rotor` binary (node bin/rotor.mjs) against a running embedded Rotor.
 * Each spawn costs about half a second, so independent commands run in parallel.
 */
import { chmodSync, existsSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseEnvFormat } from "../../core/secrets/read.ts";
import { freePort, runCli, spawnCli, startTestServer, tempDir, waitForOutput, type ProcessResult, type TestServer } from "../support/embedded.ts";

let rotor: TestServer;
let env: Record<string, string>;
let work: string;

const VALUES = {
  DATABASE_URL: "postgres://app:s3cret@db:5432/app",
  GREETING: 'say "hi"\nand $LEAVE \\ alone',
  EMPTY: "",
};

async function adminApi<T = any>(method: string, path: string, opts: { query?: Record<string, string>; body?: unknown } = {}): Promise<T> {
  const res = await rotor.api<T>(method, path, { ...opts, token: rotor.adminToken });
  if (res.status !== 200) throw new Error(`${method} ${path}: ${res.status} ${res.text}`);
  return res.json;
}
const valuesOf = (config: string, project = "shop") => adminApi<Record<string, string>>("GET", "/v3/configs/config/secrets/download", { query: { project, config } });

/** A command that succeeded: exit 0 and nothing on stderr (unless allowed). */
function ok(r: ProcessResult, stderr: RegExp | "" = "") {
  expect(r.code, `exit code; stderr: ${r.stderr}`).toBe(0);
  if (stderr === "") expect(r.stderr).toBe("");
  else expect(r.stderr).toMatch(stderr);
  return r.stdout;
}

/** A command that failed: a non-zero exit, exactly one line on stderr, nothing on stdout. */
function failed(r: ProcessResult, code: number, message: RegExp) {
  expect(r.code, `exit code; stdout: ${r.stdout}; stderr: ${r.stderr}`).toBe(code);
  expect(r.stdout).toBe("");
  expect(r.stderr).toMatch(/^[^\n]+\n$/);
  expect(r.stderr).toMatch(message);
  expect(r.stderr).not.toMatch(/\bat \S+ \(|\.ts:\d+|node_modules/);
}

beforeAll(async () => {
  rotor = await startTestServer();
  work = tempDir("rotor-cli-");
  await adminApi("POST", "/v3/projects", { body: { name: "shop" } });
  await adminApi("POST", "/v3/configs", { body: { project: "shop", name: "dev" } });
  await adminApi("POST", "/v3/configs", { body: { project: "shop", name: "prod" } });
  await adminApi("POST", "/v3/configs/config/secrets", { body: { project: "shop", config: "prod", secrets: { WHERE: "prod" } } });
  env = { ROTOR_API_URL: rotor.url, ROTOR_TOKEN: rotor.adminToken, ROTOR_PROJECT: "shop", ROTOR_CONFIG: "dev" };
});

afterAll(async () => {
  await rotor?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("rotor CLI", () => {
  it("projects create/list and configs create/list (--project flag and ROTOR_PROJECT)", async () => {
    const created = await runCli(["projects", "create", "web"], { env });
    expect(ok(created)).toBe("created project web\n");
    const [list, byFlag, byEnv] = await Promise.all([
      runCli(["projects", "list"], { env }),
      runCli(["configs", "create", "staging", "--project", "web"], { env }),
      runCli(["configs", "create", "qa"], { env: { ...env, ROTOR_PROJECT: "web" } }),
    ]);
    const rows = ok(list).trim().split("\n");
    expect(rows[0]).toMatch(/^name\s+createdAt/);
    expect(rows.slice(1).map((r) => r.split(/\s+/)[0]).sort()).toEqual(["shop", "web"]);
    expect(ok(byFlag)).toBe("created config web/staging\n");
    expect(ok(byEnv)).toBe("created config web/qa\n");
    const configs = ok(await runCli(["configs", "list", "--project", "web"], { env }));
    expect(configs.trim().split("\n").slice(1).map((r) => r.split(/\s+/)[0]).sort()).toEqual(["qa", "staging"]);
    const viaApi = await adminApi<{ configs: Array<{ name: string }> }>("GET", "/v3/configs", { query: { project: "web" } });
    expect(viaApi.configs.map((c) => c.name).sort()).toEqual(["qa", "staging"]);
  });

  it("secrets set: several KEY=VALUE pairs, and a lone KEY reads its value from stdin", async () => {
    const set = await runCli(["secrets", "set", `DATABASE_URL=${VALUES.DATABASE_URL}`, "EMPTY=", "TEMP=1", "EQUALS=a=b"], { env });
    expect(ok(set).trim().split("\n").sort()).toEqual(["DATABASE_URL set (version 1)", "EMPTY set (version 1)", "EQUALS set (version 1)", "TEMP set (version 1)"]);
    const stdin = await runCli(["secrets", "set", "GREETING"], { env, input: VALUES.GREETING + "\n" });
    expect(ok(stdin)).toBe("GREETING set (version 1)\n");
    expect(await valuesOf("dev")).toEqual({ ...VALUES, TEMP: "1", EQUALS: "a=b" });
  });

  it("secrets get, list (names only) and list --values", async () => {
    const [get, getMulti, list, listValues] = await Promise.all([
      runCli(["secrets", "get", "DATABASE_URL"], { env }),
      runCli(["secrets", "get", "GREETING"], { env }),
      runCli(["secrets", "list"], { env }),
      runCli(["secrets", "list", "--values"], { env }),
    ]);
    expect(ok(get)).toBe(VALUES.DATABASE_URL + "\n");
    expect(ok(getMulti)).toBe(VALUES.GREETING + "\n");
    const names = ok(list).trim().split("\n");
    expect(names[0]).toMatch(/^name\s+version\s+source$/);
    expect(names.slice(1).map((r) => r.split(/\s+/)[0])).toEqual(["DATABASE_URL", "EMPTY", "EQUALS", "GREETING", "TEMP"]);
    expect(list.stdout).not.toContain("s3cret");
    expect(list.stdout).not.toContain("a=b");
    expect(ok(listValues)).toContain(VALUES.DATABASE_URL);
    expect(listValues.stdout).toMatch(/^TEMP\s+1\s+static\s+1$/m);
  });

  it("secrets delete", async () => {
    const del = await runCli(["secrets", "delete", "TEMP", "EQUALS"], { env });
    expect(ok(del)).toBe("TEMP deleted\nEQUALS deleted\n");
    expect(await valuesOf("dev")).toEqual(VALUES);
    const again = await runCli(["secrets", "delete", "TEMP"], { env });
    expect(ok(again)).toBe("TEMP did not exist\n");
  });

  it("secrets download --no-file prints JSON or env lines", async () => {
    const [json, envFormat, jsonExplicit] = await Promise.all([
      runCli(["secrets", "download", "--no-file"], { env }),
      runCli(["secrets", "download", "--no-file", "--format", "env"], { env }),
      runCli(["secrets", "download", "--no-file", "--format", "json"], { env }),
    ]);
    expect(JSON.parse(ok(json))).toEqual(VALUES);
    expect(ok(jsonExplicit)).toBe(json.stdout);
    expect(ok(envFormat)).toContain('GREETING="say \\"hi\\"\\nand \\$LEAVE \\\\ alone"\n');
    expect(parseEnvFormat(envFormat.stdout)).toEqual(VALUES);
    expect(existsSync(join(process.cwd(), "rotor.json"))).toBe(false);
  });

  it("secrets download writes rotor.json in the working directory, or --output PATH, with mode 0600", async () => {
    const existing = join(work, "existing.env");
    writeFileSync(existing, "old\n", { mode: 0o644 });
    chmodSync(existing, 0o644);
    const [dflt, output] = await Promise.all([
      runCli(["secrets", "download"], { env, cwd: work }),
      runCli(["secrets", "download", "--format", "env", "--output", existing], { env, cwd: work }),
    ]);
    ok(dflt, /rotor\.json/);
    expect(dflt.stdout).toBe("");
    const file = join(work, "rotor.json");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual(VALUES);
    ok(output, /existing\.env/);
    expect(statSync(existing).mode & 0o777).toBe(0o600);
    expect(parseEnvFormat(readFileSync(existing, "utf8"))).toEqual(VALUES);
  });

  it("run -- CMD sees the values in its environment, and its exit code comes back", async () => {
    const script = `process.stdout.write(JSON.stringify({ db: process.env.DATABASE_URL, greeting: process.env.GREETING, empty: process.env.EMPTY, path: !!process.env.PATH })); process.exit(7)`;
    const r = await runCli(["run", "--", process.execPath, "-e", script], { env });
    expect(r.code, r.stderr).toBe(7);
    expect(JSON.parse(r.stdout)).toEqual({ db: VALUES.DATABASE_URL, greeting: VALUES.GREETING, empty: "", path: true });
    const zero = await runCli(["run", "--config", "prod", "--", process.execPath, "-e", "process.stdout.write(process.env.WHERE)"], { env });
    expect(ok(zero)).toBe("prod");
  });

  it("run forwards SIGTERM to the command and exits with the command's code", async () => {
    const script = `process.on("SIGTERM", () => { console.log("child got SIGTERM"); process.exit(42); }); console.log("ready"); setInterval(() => {}, 1000);`;
    const proc = spawnCli(["run", "--", process.execPath, "-e", script], { env });
    await waitForOutput(proc, (o) => o.stdout.includes("ready"));
    proc.child.kill("SIGTERM");
    const r = await proc.done;
    expect(r.code, r.stderr).toBe(42);
    expect(r.stdout).toBe("ready\nchild got SIGTERM\n");
  });

  it("tokens create prints the token once; list shows no values; revoke makes it fail", async () => {
    const created = await runCli(["tokens", "create", "--config", "prod", "--access", "read", "--name", "deploy"], { env });
    const token = ok(created, /^token tok_\w+ for shop\/prod \(read\); it is shown only now:\n$/).trim();
    expect(token).toMatch(/^rtr_svc_[A-Za-z0-9_-]+$/);
    expect(created.stdout).toBe(token + "\n");
    const id = /token (tok_\w+)/.exec(created.stderr)![1];
    const asService = { ...env, ROTOR_TOKEN: token, ROTOR_CONFIG: "prod" };

    const [list, read, write, otherConfig] = await Promise.all([
      runCli(["tokens", "list"], { env }),
      runCli(["secrets", "get", "WHERE"], { env: asService }),
      runCli(["secrets", "set", "WHERE=hacked"], { env: asService }),
      runCli(["secrets", "download", "--no-file", "--config", "dev"], { env: asService }),
    ]);
    const row = ok(list).split("\n").find((l) => l.startsWith(id));
    expect(row).toMatch(new RegExp(`^${id}\\s+service\\s+shop\\s+prod\\s+read\\s+deploy\\s+\\S+$`));
    expect(list.stdout).not.toContain(token);
    expect(list.stdout).not.toContain(rotor.adminToken);
    expect(ok(read)).toBe("prod\n");
    failed(write, 1, /read-only/);
    failed(otherConfig, 1, /scoped to shop\/prod/);
    expect((await valuesOf("prod")).WHERE).toBe("prod");

    expect(ok(await runCli(["tokens", "revoke", id], { env }))).toBe(`revoked ${id}\n`);
    failed(await runCli(["secrets", "get", "WHERE"], { env: asService }), 1, /revoked/);
    const after = ok(await runCli(["tokens", "list"], { env }));
    expect(after.split("\n").find((l) => l.startsWith(id))).toMatch(/\d{4}-\d\d-\d\dT\S+\s+\d{4}-\d\d-\d\dT\S+$/); // revokedAt filled
  });

  it("--project and --config override ROTOR_PROJECT and ROTOR_CONFIG", async () => {
    const wrongEnv = { ...env, ROTOR_PROJECT: "no-such-project", ROTOR_CONFIG: "no-such-config" };
    const [get, getAfter, short] = await Promise.all([
      runCli(["--project", "shop", "--config", "prod", "secrets", "get", "WHERE"], { env: wrongEnv }),
      runCli(["secrets", "get", "WHERE", "--project", "shop", "--config", "prod"], { env: wrongEnv }),
      runCli(["-p", "shop", "-c", "dev", "secrets", "download", "--no-file"], { env: wrongEnv }),
    ]);
    expect(ok(get)).toBe("prod\n");
    expect(ok(getAfter)).toBe("prod\n");
    expect(JSON.parse(ok(short))).toEqual(VALUES);
  });

  it("without ROTOR_TOKEN, uses the admin token in $ROTOR_DATA_DIR/admin-token", async () => {
    const r = await runCli(["secrets", "get", "WHERE", "--config", "prod"], { env: { ...env, ROTOR_TOKEN: undefined, ROTOR_DATA_DIR: rotor.dataDir } });
    expect(ok(r)).toBe("prod\n");
  });

  it("every failure is one line on stderr and a non-zero exit", async () => {
    const deadPort = await freePort();
    const deadUrl = `http://127.0.0.1:${deadPort}`;
    const cases: Array<[string, Promise<ProcessResult>, number, RegExp]> = [
      ["unknown secret", runCli(["secrets", "get", "NO_SUCH_SECRET"], { env }), 1, /secret 'NO_SUCH_SECRET' does not exist in shop\/dev/],
      ["bad name (lowercase)", runCli(["secrets", "set", "lower=1"], { env }), 1, /lower.*\^\[A-Z_\]\[A-Z0-9_\]\*\$/],
      ["bad name (starts with a digit)", runCli(["secrets", "set", "1ABC=1"], { env }), 1, /1ABC/],
      ["bad name (get)", runCli(["secrets", "get", "lower"], { env }), 1, /secret names must match/],
      ["no name before =", runCli(["secrets", "set", "=x"], { env }), 2, /no name before '='/],
      ["unreachable API", runCli(["secrets", "list"], { env: { ...env, ROTOR_API_URL: deadUrl } }), 3, new RegExp(`cannot reach the Rotor API at ${deadUrl}`)],
      ["unreachable API (--api-url)", runCli(["--api-url", deadUrl + "/", "projects", "list"], { env }), 3, new RegExp(`${deadUrl}\\b`)],
      ["not a URL", runCli(["secrets", "list"], { env: { ...env, ROTOR_API_URL: "not a url" } }), 2, /'not a url' is not a Rotor API URL/],
      ["no token", runCli(["secrets", "list"], { env: { ...env, ROTOR_TOKEN: undefined } }), 2, /no token/],
      ["bad token", runCli(["secrets", "list"], { env: { ...env, ROTOR_TOKEN: "rtr_admin_notarealtoken" } }), 1, /invalid token/],
      ["no project", runCli(["secrets", "list"], { env: { ...env, ROTOR_PROJECT: undefined } }), 2, /no project/],
      ["no config", runCli(["secrets", "list"], { env: { ...env, ROTOR_CONFIG: undefined } }), 2, /no config/],
      ["unknown config", runCli(["secrets", "list", "--config", "nope"], { env }), 1, /config 'nope' does not exist/],
      ["unknown project", runCli(["configs", "list", "--project", "nope"], { env }), 1, /project 'nope' does not exist/],
      ["duplicate project", runCli(["projects", "create", "shop"], { env }), 1, /already exists/],
      ["bad format", runCli(["secrets", "download", "--no-file", "--format", "xml"], { env }), 2, /xml/],
      ["download into a missing directory", runCli(["secrets", "download", "--output", join(work, "missing", "x.json")], { env }), 1, /cannot write .*x\.json: its directory does not exist/],
      ["unknown command", runCli(["bogus"], { env }), 2, /unknown command/],
      ["run: command not found", runCli(["run", "--", "rotor-test-no-such-command"], { env }), 127, /command not found: rotor-test-no-such-command/],
      ["revoke an unknown token", runCli(["tokens", "revoke", "tok_nope"], { env }), 1, /tok_nope/],
    ];
    const results = await Promise.all(cases.map(([, p]) => p));
    const problems: string[] = [];
    cases.forEach(([name, , code, message], i) => {
      try {
        failed(results[i], code, message);
      } catch (e) {
        problems.push(`${name}: ${(e as Error).message}\n  stdout: ${results[i].stdout}\n  stderr: ${results[i].stderr}`);
      }
    });
    expect(problems).toEqual([]);
    // Nothing changed.
    expect(await valuesOf("dev")).toEqual(VALUES);
  });
});
