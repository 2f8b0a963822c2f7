/**
 * End-to-end helpers: a real embedded Rotor (in this process, or as `npm start` in a child
 * process), a small HTTP helper, and the real `rotor` CLI as a child process.
 *
 *   let rotor: TestServer;
 *   beforeAll(async () => { rotor = await startTestServer(); });
 *   afterAll(() => rotor?.stop());
 *   it("...", async () => {
 *     const res = await rotor.api("GET", "/v3/projects", { token: rotor.adminToken });
 *     const cli = await runCli(["projects", "list"], { env: { ROTOR_API_URL: rotor.url, ROTOR_TOKEN: rotor.adminToken } });
 *   });
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { startEmbedded, type Embedded } from "../../local/runtime.ts";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const ROTOR_BIN = join(REPO_ROOT, "bin/rotor.mjs");

/** A fresh temporary directory; remove it with `rmSync(dir, { recursive: true, force: true })`. */
export function tempDir(prefix = "rotor-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => res(port));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// HTTP

export interface ApiOptions {
  token?: string;
  query?: Record<string, string | number | boolean | undefined>;
  /** Sent as JSON (with content-type application/json). */
  body?: unknown;
  /** Sent as is; set the content type yourself through `headers`. */
  rawBody?: string;
  headers?: Record<string, string>;
}

export interface ApiResponse<T = any> {
  status: number;
  /** The parsed body, or undefined when it is not JSON. */
  json: T;
  text: string;
  headers: Headers;
}

/** One request to `baseUrl + path`; never throws on an HTTP error status. */
export async function apiRequest<T = any>(baseUrl: string, method: string, path: string, opts: ApiOptions = {}): Promise<ApiResponse<T>> {
  const url = new URL(baseUrl + path);
  for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  let body: string | undefined = opts.rawBody;
  if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers["content-type"] ??= "application/json";
  }
  const res = await fetch(url, { method, headers, body });
  const text = await res.text();
  let json: T = undefined as T;
  try {
    json = JSON.parse(text) as T;
  } catch {
    /* not JSON */
  }
  return { status: res.status, json, text, headers: res.headers };
}

// ---------------------------------------------------------------------------------------------
// In-process embedded server

export interface TestServer {
  url: string;
  dataDir: string;
  adminToken: string;
  embedded: Embedded;
  api<T = any>(method: string, path: string, opts?: ApiOptions): Promise<ApiResponse<T>>;
  /** Stops the server and removes its data dir; safe to call twice. */
  stop(): Promise<void>;
}

/** Reads the admin token `npm start` (or startEmbedded) wrote into a data dir. */
export function readAdminToken(dataDir: string): string {
  return readFileSync(join(dataDir, "admin-token"), "utf8").trim();
}

/** An embedded Rotor in this process, on a free port, with dynalite on disk in a fresh temp dir. */
export async function startTestServer(opts: { log?: (line: string) => void } = {}): Promise<TestServer> {
  const dataDir = tempDir("rotor-e2e-");
  let embedded: Embedded;
  try {
    embedded = await startEmbedded({ dataDir, port: 0, log: opts.log ?? (() => {}) });
  } catch (e) {
    rmSync(dataDir, { recursive: true, force: true });
    throw e;
  }
  let stopped: Promise<void> | undefined;
  return {
    url: embedded.url,
    dataDir,
    adminToken: readAdminToken(dataDir),
    embedded,
    api: (method, path, o) => apiRequest(embedded.url, method, path, o),
    stop() {
      stopped ??= embedded.stop().finally(() => rmSync(dataDir, { recursive: true, force: true }));
      return stopped;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Child processes

export interface ProcessResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * The environment of a child: this process's, minus every ROTOR_* variable (so nothing of the
 * developer's own setup leaks in), plus `extra`. ROTOR_DATA_DIR points at a directory that does
 * not exist unless given, so the CLI never picks up an admin token by accident.
 */
export function childEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("ROTOR_") && !k.startsWith("VITEST") && v !== undefined) env[k] = v;
  env.ROTOR_DATA_DIR = join(tmpdir(), "rotor-test-no-such-dir");
  env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = "true";
  env.NO_COLOR = "1";
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

export interface CliOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Written to the child's stdin, which is then closed (stdin is always closed). */
  input?: string;
  timeoutMs?: number;
}

/** A running `rotor` with its output collected; `done` resolves when it exits. */
export interface CliProcess {
  child: ChildProcess;
  readonly stdout: string;
  readonly stderr: string;
  done: Promise<ProcessResult>;
}

/** Starts the real CLI (`node bin/rotor.mjs ARGS`) without waiting for it. */
export function spawnCli(args: string[], opts: CliOptions = {}): CliProcess {
  const child = spawn(process.execPath, [ROTOR_BIN, ...args], {
    cwd: opts.cwd ?? REPO_ROOT,
    env: childEnv(opts.env),
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (s: string) => (stdout += s));
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  child.stdin!.on("error", () => {});
  child.stdin!.end(opts.input ?? "");
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const done = new Promise<ProcessResult>((res, rej) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      rej(new Error(`rotor ${args.join(" ")} did not exit within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.once("error", (e) => {
      clearTimeout(timer);
      rej(e);
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      res({ code, signal, stdout, stderr });
    });
  });
  return {
    child,
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    done,
  };
}

/** Runs the real CLI to completion: `{ code, stdout, stderr }`. */
export function runCli(args: string[], opts: CliOptions = {}): Promise<ProcessResult> {
  return spawnCli(args, opts).done;
}

/** Resolves once `predicate(output)` holds for what the process printed so far. */
export async function waitForOutput(proc: { readonly stdout: string; readonly stderr: string }, predicate: (out: { stdout: string; stderr: string }) => boolean, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate({ stdout: proc.stdout, stderr: proc.stderr })) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for output\nstdout: ${proc.stdout}\nstderr: ${proc.stderr}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

// ---------------------------------------------------------------------------------------------
// `npm start` as a child process

export interface MainProcess {
  url: string;
  port: number;
  child: ChildProcess;
  readonly stdout: string;
  readonly stderr: string;
  /** Sends SIGINT and waits for the exit; returns the result (the caller asserts on it). */
  stop(): Promise<ProcessResult>;
  /** SIGKILL, for cleanup after a failure; safe to call any time. */
  kill(): void;
}

/** Every main process started and not yet stopped: killed if this process exits. */
const liveMains = new Set<ChildProcess>();
let exitHook = false;

/**
 * `node --import tsx local/main.ts` (what `npm start` runs) with ROTOR_DATA_DIR=dataDir on a
 * free port; resolves once GET /health answers 200. Retries on another port if one was taken.
 */
export async function startMain(dataDir: string, opts: { env?: Record<string, string | undefined>; timeoutMs?: number } = {}): Promise<MainProcess> {
  if (!exitHook) {
    exitHook = true;
    process.on("exit", () => {
      for (const c of liveMains) c.kill("SIGKILL");
    });
  }
  let last: Error | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    try {
      return await launchMain(dataDir, port, opts);
    } catch (e) {
      last = e as Error;
      if (!/in use/.test(last.message)) throw last;
    }
  }
  throw last;
}

async function launchMain(dataDir: string, port: number, opts: { env?: Record<string, string | undefined>; timeoutMs?: number }): Promise<MainProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", "local/main.ts"], {
    cwd: REPO_ROOT,
    env: childEnv({ ROTOR_DATA_DIR: dataDir, ROTOR_PORT: String(port), ...opts.env }),
    stdio: ["ignore", "pipe", "pipe"],
  });
  liveMains.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (s: string) => (stdout += s));
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  let exit: ProcessResult | undefined;
  const exited = new Promise<ProcessResult>((res) =>
    child.once("close", (code, signal) => {
      liveMains.delete(child);
      exit = { code, signal, stdout, stderr };
      res(exit);
    }),
  );
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    if (exit) throw new Error(`local/main.ts exited during startup (code ${exit.code}): ${stderr.trim() || stdout.trim()}`);
    try {
      const res = await fetch(url + "/health");
      if (res.status === 200) {
        await res.text();
        break;
      }
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      await exited;
      throw new Error(`local/main.ts did not answer /health within the timeout\nstdout: ${stdout}\nstderr: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  let stopping: Promise<ProcessResult> | undefined;
  return {
    url,
    port,
    child,
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    stop() {
      stopping ??= (async () => {
        if (!exit) {
          child.kill("SIGINT");
          const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
          await exited;
          clearTimeout(timer);
        }
        return exit!;
      })();
      return stopping;
    },
    kill() {
      if (!exit) child.kill("SIGKILL");
    },
  };
}
