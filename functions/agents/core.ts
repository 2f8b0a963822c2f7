import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type {
  AgentRequest,
  AgentResponse,
  CreateUserBody,
  CreateUserResult,
  DeleteUserBody,
  DeleteUserResult,
  ErrorMetadata,
  RenewUserBody,
  RenewUserResult,
  Ssl,
  StatusResult,
  TestCredentialsBody,
  TestCredentialsResult,
  UpdateCredentialBody,
  UpdateCredentialResult,
} from "../../core/agent-protocol/schemas.ts";
import { AgentError, keyResolverOf, verifyRequest, type JwksInput, type KeyResolver } from "../../core/agent-protocol/verify.ts";

/**
 * The shared agent core: verify the JWS, parse, dispatch on `type`, answer the envelope.
 * Engines (one short file each) only talk to their database. Three transports share one
 * `handle`: Lambda, HTTP POST, in-process.
 */
export { AgentError };

/** Where a request's database is, as every request body carries it. */
export interface DatabaseTarget {
  host: string;
  port: number;
  database: string;
  ssl?: Parameters<typeof tlsOptions>[0];
}
export type ManagedTarget = DatabaseTarget & { managingUser: { username: string; password: string } };

export interface Engine {
  status(): Promise<StatusResult>;
  testCredentials(body: TestCredentialsBody): Promise<TestCredentialsResult>;
  updateCredential(body: UpdateCredentialBody): Promise<UpdateCredentialResult>;
  createUser(body: CreateUserBody): Promise<CreateUserResult>;
  deleteUser(body: DeleteUserBody): Promise<DeleteUserResult>;
  renewUser(body: RenewUserBody): Promise<RenewUserResult>;
}

export interface AgentOptions {
  /** Default: ROTOR_JWKS (a JSON document) or ROTOR_JWKS_URL from the environment. */
  jwks?: JwksInput;
  now?: () => Date;
  /** Where unexpected (internal) failures are reported; messages are already scrubbed. */
  log?: (line: string) => void;
  /**
   * At most this many requests talk to the database at once; the rest wait their turn
   * (after their signature was checked, so waiting never ages them past the clock skew).
   * A long-lived agent serving many leases (embedded mode, the HTTP transport) would
   * otherwise open one connection per expiring lease at the same instant and exhaust the
   * database's connection limit. Default: `ROTOR_AGENT_MAX_CONCURRENCY`, else 16 (a
   * Lambda instance handles one request at a time anyway).
   */
  maxConcurrent?: number;
}

/** A counting semaphore: `run` waits for a free slot. */
function limiter(max: number | undefined) {
  if (!max || max <= 0 || !Number.isFinite(max)) return <T>(fn: () => Promise<T>) => fn();
  let active = 0;
  const waiting: Array<() => void> = [];
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    if (active >= max) await new Promise<void>((r) => waiting.push(r));
    else active++;
    try {
      return await fn();
    } finally {
      const next = waiting.shift();
      if (next) next(); // the slot passes straight to the next waiter
      else active--;
    }
  };
}

export interface LambdaEvent {
  body?: unknown;
  isBase64Encoded?: boolean;
}

export interface Agent {
  handle(compactJws: string): Promise<AgentResponse>;
  lambda(event: LambdaEvent): Promise<AgentResponse>;
  http(req: IncomingMessage, res: ServerResponse): void;
}

const MAX_MESSAGE = 300;
const MAX_HTTP_BODY = 256 * 1024;

export const DEFAULT_AGENT_CONCURRENCY = 16;

/** `ROTOR_AGENT_MAX_CONCURRENCY`: a positive whole number; anything else is a startup error, not a silent default. */
export function maxConcurrencyFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.ROTOR_AGENT_MAX_CONCURRENCY;
  if (raw === undefined || raw === "") return DEFAULT_AGENT_CONCURRENCY;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new AgentError("agent_misconfigured", `ROTOR_AGENT_MAX_CONCURRENCY must be a positive whole number, got '${raw.slice(0, 20)}'`);
  return n;
}

export function jwksFromEnv(env: NodeJS.ProcessEnv = process.env): JwksInput {
  if (env.ROTOR_JWKS) {
    try {
      return JSON.parse(env.ROTOR_JWKS) as JwksInput;
    } catch {
      throw new AgentError("agent_misconfigured", "ROTOR_JWKS is not valid JSON");
    }
  }
  if (env.ROTOR_JWKS_URL) return new URL(env.ROTOR_JWKS_URL);
  throw new AgentError("agent_misconfigured", "set ROTOR_JWKS or ROTOR_JWKS_URL");
}

export function createAgent(engine: Engine, options: AgentOptions = {}): Agent {
  const now = options.now ?? (() => new Date());
  const log = options.log ?? ((line: string) => console.error(line));
  let resolver: KeyResolver | undefined; // built once: a remote JWKS keeps its cache between calls
  const limit = limiter(options.maxConcurrent ?? maxConcurrencyFromEnv());

  async function handle(compactJws: string): Promise<AgentResponse> {
    let request: AgentRequest | undefined;
    try {
      resolver ??= keyResolverOf(options.jwks ?? jwksFromEnv());
      request = await verifyRequest(compactJws, resolver, now());
      const verified = request;
      const body = await limit(() => dispatch(engine, verified));
      return { status: "ok", body: scrubDeep(body, secretsOf(request)) as Record<string, unknown> };
    } catch (e) {
      const metadata = errorMetadata(e, secretsOf(request));
      if (metadata.code === "internal") log(`rotor agent: ${request?.type ?? "request"} failed: ${metadata.message}`);
      return { status: "error", metadata };
    }
  }

  return {
    handle,
    async lambda(event) {
      const raw = typeof event?.body === "string" ? event.body : "";
      return handle(event?.isBase64Encoded ? Buffer.from(raw, "base64").toString("utf8") : raw);
    },
    http(req, res) {
      const reply = (status: number, body: AgentResponse) => {
        if (res.headersSent) return;
        res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
        res.end(JSON.stringify(body));
      };
      if (req.method !== "POST") return reply(405, failure("invalid_request", "use POST"));
      const chunks: Buffer[] = [];
      let size = 0;
      req.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size <= MAX_HTTP_BODY) return void chunks.push(chunk);
        if (res.headersSent) return;
        res.setHeader("connection", "close");
        reply(413, failure("invalid_request", "request body too large"));
        res.once("finish", () => req.destroy()); // stop reading, once the answer is out
      });
      req.on("error", () => res.destroy());
      req.on("end", () => {
        if (size > MAX_HTTP_BODY) return;
        // Envelopes always answer 200, as Doppler's HTTP agents do: the status is in the body.
        void handle(jwsFromHttpBody(Buffer.concat(chunks).toString("utf8"))).then((r) => reply(200, r));
      });
    },
  };
}

function dispatch(engine: Engine, request: AgentRequest): Promise<object> {
  switch (request.type) {
    case "status":
      return engine.status();
    case "testCredentials":
      return engine.testCredentials(request.body);
    case "updateCredential":
      return engine.updateCredential(request.body);
    case "createUser":
      return engine.createUser(request.body);
    case "deleteUser":
      return engine.deleteUser(request.body);
    case "renewUser":
      return engine.renewUser(request.body);
  }
}

/** The raw JWS, or JSON `{ "body": "<jws>" }` (the Lambda event shape, posted as is). */
function jwsFromHttpBody(text: string): string {
  const trimmed = text.trim();
  if (!trimmed.startsWith("{")) return trimmed;
  try {
    const body = (JSON.parse(trimmed) as { body?: unknown }).body;
    return typeof body === "string" ? body : "";
  } catch {
    return "";
  }
}

/** Start the HTTP transport (Cloud Run style). Port 0 picks a free one. */
export async function serve(agent: Agent, port: number, host?: string): Promise<Server> {
  const server = createServer((req, res) => agent.http(req, res));
  server.requestTimeout = 60_000;
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(port, host, () => ok());
  });
  return server;
}

/** True when the module with this import.meta.url is the script node was started with. */
export function isMain(moduleUrl: string): boolean {
  return !!process.argv[1] && pathToFileURL(resolve(process.argv[1])).href === moduleUrl;
}

/**
 * An engine's two ways in: `handler` for AWS Lambda (`{ body: "<compact JWS>" }` → response
 * envelope), and an HTTP server on $PORT when its module is the script node was started with.
 */
export function agentEntryPoints(engine: Engine, label: string, moduleUrl: string) {
  const agent = createAgent(engine);
  const main = async (): Promise<void> => {
    const server = await serve(agent, Number(process.env.PORT ?? 8080));
    console.log(`rotor ${label} agent listening on ${JSON.stringify(server.address())}`);
    process.once("SIGTERM", () => server.close());
  };
  if (isMain(moduleUrl)) void main();
  return { agent, handler: agent.lambda, main };
}

// ---- Keeping secrets out of answers -------------------------------------------------

/** Every password the request carries, whatever the request type: any string under a key named *password*. */
export function secretsOf(request: AgentRequest | undefined): string[] {
  const found: string[] = [];
  const walk = (value: unknown, key: string) => {
    if (typeof value === "string") {
      if (/password/i.test(key) && value.length > 0) found.push(value);
    } else if (Array.isArray(value)) value.forEach((v) => walk(v, key));
    else if (value && typeof value === "object") for (const [k, v] of Object.entries(value)) walk(v, k);
  };
  walk(request?.body, "");
  return found;
}

/**
 * Remove each secret from a message, also in the forms a driver may echo it: SQL-quoted
 * (' doubled), backslash-escaped (MySQL), JSON-escaped, URL-encoded. Then cut the message
 * short, after scrubbing, so a cut can never leave half a password behind.
 */
export function scrub(message: string, secrets: string[]): string {
  const forms = new Set<string>();
  for (const s of secrets) {
    forms.add(s);
    forms.add(s.replaceAll("'", "''"));
    forms.add(s.replace(/[\0\b\t\n\r\x1a"'\\]/g, (c) => "\\" + ({ "\0": "0", "\b": "b", "\t": "t", "\n": "n", "\r": "r", "\x1a": "Z" }[c] ?? c)));
    forms.add(JSON.stringify(s).slice(1, -1));
    forms.add(encodeURIComponent(s));
  }
  let out = message;
  for (const form of [...forms].filter(Boolean).sort((a, b) => b.length - a.length)) out = out.split(form).join("[redacted]");
  return out.length > MAX_MESSAGE ? out.slice(0, MAX_MESSAGE - 1) + "…" : out;
}

function scrubDeep(value: unknown, secrets: string[]): unknown {
  if (typeof value === "string") return scrub(value, secrets);
  if (Array.isArray(value)) return value.map((v) => scrubDeep(v, secrets));
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, scrubDeep(v, secrets)]));
  }
  return value;
}

function failure(code: string, message: string, retryable = false): AgentResponse {
  return { status: "error", metadata: { code, message, retryable } };
}

function errorMetadata(e: unknown, secrets: string[]): ErrorMetadata {
  if (e instanceof AgentError) return { code: e.code, message: scrub(e.message, secrets), retryable: e.retryable };
  const message = e instanceof Error ? e.message : String(e);
  return { code: "internal", message: scrub(message || "unexpected failure", secrets), retryable: false };
}

// ---- Helpers the engines share ------------------------------------------------------

/** `true` means TLS with the system CAs; certificates are verified unless explicitly turned off. */
export function tlsOptions(ssl: Ssl | undefined): { ca?: string; cert?: string; key?: string; rejectUnauthorized: boolean } | undefined {
  if (!ssl) return undefined;
  if (ssl === true) return { rejectUnauthorized: true };
  return { ...ssl, rejectUnauthorized: ssl.rejectUnauthorized ?? true };
}

const NETWORK_CODES = new Set([
  "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN", "EPIPE",
  "PROTOCOL_CONNECTION_LOST",
]);

/** Could not reach the database at all (as opposed to the database saying no): worth a retry. */
export function isNetworkError(e: unknown): boolean {
  const err = e as { code?: unknown; message?: unknown } | undefined;
  if (typeof err?.code === "string" && NETWORK_CODES.has(err.code)) return true;
  return typeof err?.message === "string" && /^(timeout expired|Connection terminated)/.test(err.message);
}

export function unavailable(e: unknown): AgentError {
  const code = (e as { code?: unknown }).code;
  return new AgentError("unavailable", `could not reach the database${typeof code === "string" ? ` (${code})` : ""}`, true);
}

/** A login attempt: the engine's account handle when it worked, or why the database refused it. */
export type Login<A> = { ok: true; account: A } | { ok: false; reason: string };

/** The database refused a login (as opposed to being unreachable). Engines throw it only while connecting. */
export class LoginRefused extends Error {}

/** Connect as the managing user; its refusal is an expected, reportable failure. */
export async function asManagingUser<T>(connectAndRun: () => Promise<T>): Promise<T> {
  try {
    return await connectAndRun();
  } catch (e) {
    if (e instanceof LoginRefused) throw new AgentError("managing_credential_invalid", `the managing user could not log in: ${e.message}`);
    throw e;
  }
}

/** Probe a login; a refusal is an answer, not an error. */
export async function probeLogin<A>(connectAndRun: () => Promise<A>): Promise<Login<A>> {
  try {
    return { ok: true, account: await connectAndRun() };
  } catch (e) {
    if (e instanceof LoginRefused) return { ok: false, reason: e.message };
    throw e;
  }
}

export async function testLogins(
  body: TestCredentialsBody,
  login: (username: string, password: string) => Promise<Login<unknown>>,
): Promise<TestCredentialsResult> {
  for (const { username, password } of body.users) {
    const result = await login(username, password);
    if (!result.ok) return { type: "invalid", reason: result.reason };
  }
  return { type: "valid" };
}

/**
 * Check the current credential, then set the new one. If the current one is refused but
 * the new one works, the change was already applied (a retry after a crash between the
 * database write and Rotor's store write): answer ok so the flip converges.
 */
export async function rotatePassword<A>(
  body: UpdateCredentialBody,
  ops: {
    login(username: string, password: string): Promise<Login<A>>;
    setPassword(account: A, newPassword: string): Promise<void>;
  },
): Promise<UpdateCredentialResult> {
  const { username, currentPassword, newPassword } = body.rotateUser;
  const current = await ops.login(username, currentPassword);
  if (!current.ok) {
    if ((await ops.login(username, newPassword)).ok) return { type: "already_applied" };
    throw new AgentError("current_credential_invalid", "current credential is not valid");
  }
  await ops.setPassword(current.account, newPassword);
  return { type: "updated" };
}

/** `{{username}}` → the engine's quoted name. A function replacer: `$&` in a name stays literal. */
export function renderGrant(template: string, quotedName: string): string {
  return template.replaceAll("{{username}}", () => quotedName);
}
