import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** A failure to show the user as one line; `exitCode` 1 = the API said no, 2 = usage, 3 = unreachable. */
export class CliError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
  }
}

export interface ClientOptions {
  apiUrl: string;
  token?: string;
}

/** Where the CLI talks to: flags, then environment, then the embedded defaults. */
export function clientOptionsFromEnv(env = process.env): ClientOptions {
  const apiUrl = (env.ROTOR_API_URL || `http://127.0.0.1:${env.ROTOR_PORT || 8787}`).replace(/\/+$/, "");
  let token = env.ROTOR_TOKEN;
  // Convenience for embedded mode on one's own machine: use the admin token npm start wrote.
  if (!token) {
    const path = join(env.ROTOR_DATA_DIR || ".rotor", "admin-token");
    if (existsSync(path)) token = readFileSync(path, "utf8").trim();
  }
  return { apiUrl, token };
}

export class ApiClient {
  constructor(private readonly opts: ClientOptions) {}

  async request<T = unknown>(method: string, path: string, opts: { query?: Record<string, string | number | boolean | undefined>; body?: unknown; raw?: boolean } = {}): Promise<T> {
    let url: URL;
    try {
      url = new URL(this.opts.apiUrl + path);
      if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error("not http(s)");
    } catch {
      throw new CliError(`'${this.opts.apiUrl}' is not a Rotor API URL: set ROTOR_API_URL or --api-url to one like http://127.0.0.1:8787`, 2);
    }
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    if (!this.opts.token) throw new CliError("no token: set ROTOR_TOKEN (or run `npm start` here, which writes .rotor/admin-token)", 2);
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: { authorization: `Bearer ${this.opts.token}`, ...(opts.body !== undefined ? { "content-type": "application/json" } : {}) },
        body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
      });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new CliError(`cannot reach the Rotor API at ${this.opts.apiUrl}: ${cause?.code ?? cause?.message ?? (e as Error).message}`, 3);
    }
    const text = await res.text();
    if (!res.ok) {
      let message = `HTTP ${res.status}`;
      try {
        const body = JSON.parse(text) as { error?: string; message?: string };
        if (body.message) message = `${body.message} (${body.error ?? res.status})`;
      } catch {
        /* not JSON: keep the status */
      }
      throw new CliError(message, 1);
    }
    if (opts.raw) return text as T;
    return (text ? JSON.parse(text) : {}) as T;
  }
}
