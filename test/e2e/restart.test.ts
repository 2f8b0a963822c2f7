/**
 * `npm start` (node --import tsx local/main.ts) as a real child process on a temp data dir:
 * first start creates the admin token and master key (0600, never printed), Ctrl-C stops it
 * cleanly, and a second start on the same dir keeps the token and the data.
 */
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { REPO_ROOT, apiRequest, childEnv, readAdminToken, startMain, tempDir, type MainProcess } from "../support/embedded.ts";

const dataDir = join(tempDir("rotor-restart-"), "data"); // not there yet: the first start creates it
const started: MainProcess[] = [];

afterAll(() => {
  for (const m of started) m.kill();
  rmSync(join(dataDir, ".."), { recursive: true, force: true });
});

const mode = (path: string) => statSync(path).mode & 0o777;

describe("restart on the same data dir", () => {
  let adminToken = "";
  let filesAfterFirstRun: string[] = [];
  let tokenFileContent = "";

  it("first start: writes admin-token and master.key (0600), says where the token is, never prints it", async () => {
    const main = await startMain(dataDir);
    started.push(main);
    try {
      const tokenPath = join(dataDir, "admin-token");
      expect(mode(tokenPath)).toBe(0o600);
      expect(mode(join(dataDir, "master.key"))).toBe(0o600);
      expect(mode(dataDir) & 0o077).toBe(0); // the data dir itself is private too
      tokenFileContent = readFileSync(tokenPath, "utf8");
      adminToken = readAdminToken(dataDir);
      expect(adminToken).toMatch(/^rtr_admin_[A-Za-z0-9_-]{32,}$/);
      expect(main.stdout).toContain(tokenPath);
      expect(main.stdout).toContain(main.url);

      const api = (method: string, path: string, body?: unknown, query?: Record<string, string>) => apiRequest(main.url, method, path, { token: adminToken, body, query });
      expect((await apiRequest(main.url, "GET", "/health")).json).toEqual({ ok: true });
      expect((await api("POST", "/v3/projects", { name: "survivor" })).status).toBe(200);
      expect((await api("POST", "/v3/configs", { project: "survivor", name: "prod" })).status).toBe(200);
      const set = await api("POST", "/v3/configs/config/secrets", { project: "survivor", config: "prod", secrets: { DB_PASSWORD: "p@ss\nword", API_KEY: "k1" } });
      expect(set.status).toBe(200);
      expect((await api("POST", "/v3/configs/config/secrets", { project: "survivor", config: "prod", secrets: { API_KEY: "k2" } })).status).toBe(200);
    } finally {
      const exit = await main.stop();
      expect(exit.code, exit.stderr).toBe(0);
      expect(exit.signal).toBeNull();
      expect(exit.stdout).toMatch(/SIGINT: stopping Rotor/);
      expect(exit.stderr).toBe("");
      // The token value never appears in the log, however it was cut.
      expect(exit.stdout + exit.stderr).not.toContain(adminToken);
      expect(exit.stdout + exit.stderr).not.toContain(adminToken.slice("rtr_admin_".length));
    }
    filesAfterFirstRun = readdirSync(dataDir).sort();
    expect(filesAfterFirstRun).toEqual(expect.arrayContaining(["admin-token", "master.key"]));
  });

  it("second start: the same admin token works, the data is there, no new token was created; a busy port is one clear line", async () => {
    expect(adminToken).not.toBe("");
    const main = await startMain(dataDir);
    started.push(main);
    try {
      expect(main.stdout).not.toMatch(/Created an admin token/);
      expect(readFileSync(join(dataDir, "admin-token"), "utf8")).toBe(tokenFileContent);
      expect(mode(join(dataDir, "admin-token"))).toBe(0o600);
      expect(readdirSync(dataDir).sort()).toEqual(filesAfterFirstRun);

      const api = (method: string, path: string, query?: Record<string, string>) => apiRequest(main.url, method, path, { token: adminToken, query });
      const download = await api("GET", "/v3/configs/config/secrets/download", { project: "survivor", config: "prod" });
      expect(download.status, download.text).toBe(200);
      expect(download.json).toEqual({ API_KEY: "k2", DB_PASSWORD: "p@ss\nword" });
      expect((await api("GET", "/v3/configs/config/secret", { project: "survivor", config: "prod", name: "API_KEY" })).json).toMatchObject({ version: 2 });
      expect((await api("GET", "/v3/projects")).json.projects.map((p: { name: string }) => p.name)).toEqual(["survivor"]);
      const tokens = (await api("GET", "/v3/tokens")).json.tokens as Array<{ kind: string }>;
      expect(tokens.filter((t) => t.kind === "admin")).toHaveLength(1);
      expect(tokens).toHaveLength(1);

      // While it runs, a second `npm start` on the same port says so in one line and exits 1.
      const busy = spawnSync(process.execPath, ["--import", "tsx", "local/main.ts"], {
        cwd: REPO_ROOT,
        env: childEnv({ ROTOR_DATA_DIR: join(dataDir, "..", "busy"), ROTOR_PORT: String(main.port) }),
        encoding: "utf8",
        timeout: 30_000,
      });
      expect(busy.status).toBe(1);
      expect(busy.stderr).toBe(`port ${main.port} is in use: set ROTOR_PORT to another port\n`);
    } finally {
      const exit = await main.stop();
      expect(exit.code, exit.stderr).toBe(0);
      expect(exit.stderr).toBe("");
      expect(exit.stdout + exit.stderr).not.toContain(adminToken);
    }
  });
});
