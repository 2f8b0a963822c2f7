import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CompactSign, exportJWK, generateKeyPair, type CryptoKey, type JWK } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  generateSigningKey,
  jwksOf,
  loadOrCreateSigningKey,
  signRequest,
  type SigningKey,
} from "../../core/agent-protocol/keys.ts";
import type { AgentResponse, UnsignedRequest } from "../../core/agent-protocol/schemas.ts";
import { AgentError, verifyRequest } from "../../core/agent-protocol/verify.ts";
import { createAgent, DEFAULT_AGENT_CONCURRENCY, jwksFromEnv, maxConcurrencyFromEnv, scrub, serve, type Engine } from "../../functions/agents/core.ts";

const target = { host: "db.internal", port: 5432, database: "app" };
const update: UnsignedRequest = {
  type: "updateCredential",
  body: {
    ...target,
    managingUser: { username: "admin", password: "m4nager-secret" },
    rotateUser: { username: "app", currentPassword: "cur'rent-secret", newPassword: "n\\ew-secret" },
  },
};

/** An engine that answers from memory and can be told to fail with a given error. */
function fakeEngine(fail?: () => Error): Engine & { calls: string[] } {
  const calls: string[] = [];
  const run = async <T>(name: string, result: T): Promise<T> => {
    calls.push(name);
    if (fail) throw fail();
    return result;
  };
  return {
    calls,
    status: () => run("status", { type: "ok" as const, engine: "fake", version: "1" }),
    testCredentials: () => run("testCredentials", { type: "valid" as const }),
    updateCredential: () => run("updateCredential", { type: "updated" as const }),
    createUser: () => run("createUser", { type: "created" as const }),
    deleteUser: () => run("deleteUser", { type: "deleted" as const, terminatedSessions: 0 }),
    renewUser: () => run("renewUser", { type: "renewed" as const }),
  };
}

const b64 = (v: unknown) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/** Sign anything, any way: for requests Rotor's own signer would refuse to produce. */
async function signRaw(payload: unknown, alg: string, key: CryptoKey | Uint8Array, kid: string): Promise<string> {
  return new CompactSign(new TextEncoder().encode(JSON.stringify(payload))).setProtectedHeader({ alg, kid }).sign(key);
}

let key: SigningKey;
let jwks: { keys: JWK[] };

beforeAll(async () => {
  ({ key } = await generateSigningKey());
  jwks = jwksOf(key.publicJwk);
});

async function refusal(jws: string, now?: Date): Promise<AgentError> {
  const error = await verifyRequest(jws, jwks, now).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(AgentError);
  return error as AgentError;
}

describe("signing and verifying", () => {
  it("accepts a request signed by Rotor's key and returns the parsed payload", async () => {
    const jws = await signRequest(key.privateKey, key.kid, update);
    const request = await verifyRequest(jws, jwks);
    expect(request.type).toBe("updateCredential");
    expect(request.body).toEqual(update.body);
    expect(Math.abs(Date.parse(request.timestamp) - Date.now())).toBeLessThan(5_000);
  });

  it("publishes only the public part, with kid, alg and use", () => {
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).toMatchObject({ kty: "EC", crv: "P-521", kid: key.kid, alg: "ES512", use: "sig" });
    expect(jwks.keys[0]).not.toHaveProperty("d");
    expect(jwksOf({ ...jwks.keys[0], d: "private" }).keys[0]).not.toHaveProperty("d");
  });

  it("refuses a tampered payload", async () => {
    const [header, , signature] = (await signRequest(key.privateKey, key.kid, update)).split(".");
    const forged = b64({ ...update, timestamp: new Date().toISOString(), body: { ...update.body, host: "evil" } });
    const e = await refusal(`${header}.${forged}.${signature}`);
    expect(e).toMatchObject({ code: "unauthorized", message: "signature verification failed" });
  });

  it("refuses a request signed by another key with the same kid, and an unknown kid", async () => {
    const { key: other } = await generateSigningKey();
    expect(await refusal(await signRequest(other.privateKey, key.kid, update))).toMatchObject({
      code: "unauthorized",
      message: "signature verification failed",
    });
    expect((await refusal(await signRequest(other.privateKey, other.kid, update))).code).toBe("unauthorized");
  });

  it("refuses alg none, HS256, ES256 and ES384, even when the JWKS holds a matching key", async () => {
    const payload = { ...update, timestamp: new Date().toISOString() };
    const none = `${b64({ alg: "none", kid: key.kid })}.${b64(payload)}.`;
    const hs256 = await signRaw(payload, "HS256", new TextEncoder().encode(JSON.stringify(key.publicJwk)), key.kid);
    const es256 = await generateKeyPair("ES256", { extractable: true });
    const es384 = await generateKeyPair("ES384", { extractable: true });
    const withOthers = {
      keys: [
        ...jwks.keys,
        { ...(await exportJWK(es256.publicKey)), kid: "p256" },
        { ...(await exportJWK(es384.publicKey)), kid: "p384" },
      ],
    };
    for (const jws of [
      none,
      hs256,
      await signRaw(payload, "ES256", es256.privateKey, "p256"),
      await signRaw(payload, "ES384", es384.privateKey, "p384"),
    ]) {
      const e = await verifyRequest(jws, withOthers).catch((err: unknown) => err);
      expect(e).toBeInstanceOf(AgentError);
      expect(e).toMatchObject({ code: "unauthorized", message: expect.stringMatching(/only ES512/) });
    }
  });

  it("refuses timestamps more than 30 s away, in the past or the future", async () => {
    const now = new Date();
    const at = (ms: number) => signRequest(key.privateKey, key.kid, update, new Date(now.getTime() + ms));
    for (const skew of [-31_000, 31_000, -3_600_000]) {
      expect(await refusal(await at(skew), now)).toMatchObject({
        code: "unauthorized",
        message: expect.stringMatching(/timestamp is more than 30 s/),
      });
    }
    for (const skew of [-29_000, 29_000]) await expect(verifyRequest(await at(skew), jwks, now)).resolves.toBeTruthy();
  });

  it("refuses an unknown type, a malformed body, a missing timestamp and non-JSON payloads", async () => {
    const ts = new Date().toISOString();
    const cases: [unknown, RegExp][] = [
      [{ type: "dropDatabase", timestamp: ts, body: {} }, /unknown request type "dropDatabase"/],
      [{ type: "updateCredential", timestamp: ts, body: { ...update.body, port: "5432" } }, /invalid updateCredential request: body.port: /],
      [{ type: "testCredentials", timestamp: ts, body: { ...target, users: [] } }, /body.users: /],
      [{ type: "status", body: {} }, /timestamp is missing/],
      [{ type: "status", timestamp: ts }, /invalid status request: body:/],
    ];
    for (const [payload, message] of cases) {
      expect(await refusal(await signRaw(payload, "ES512", key.privateKey, key.kid))).toMatchObject({
        code: "invalid_request",
        message: expect.stringMatching(message),
      });
    }
    const notJson = await new CompactSign(new TextEncoder().encode("not json"))
      .setProtectedHeader({ alg: "ES512", kid: key.kid })
      .sign(key.privateKey);
    expect((await refusal(notJson)).code).toBe("invalid_request");
    for (const garbage of ["", "abc", "a.b.c", "x".repeat(300_000)]) expect((await refusal(garbage)).code).toBe("unauthorized");
  });

  it("refuses to sign a request no agent would accept", async () => {
    const bad = { type: "testCredentials", body: { ...target, users: [] } } as UnsignedRequest;
    await expect(signRequest(key.privateKey, key.kid, bad)).rejects.toThrow(/refusing to sign an invalid testCredentials request: body.users/);
  });

  it("verifies against a remote JWKS URL, and refuses a plain-http URL that is not local", async () => {
    const server = createServer((_req, res) => res.end(JSON.stringify(jwks)));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const url = new URL(`http://127.0.0.1:${(server.address() as { port: number }).port}/jwks.json`);
      const jws = await signRequest(key.privateKey, key.kid, { type: "status", body: {} });
      await expect(verifyRequest(jws, url)).resolves.toMatchObject({ type: "status" });
      await expect(verifyRequest(jws, new URL("http://keys.example.com/jwks.json"))).rejects.toMatchObject({ code: "agent_misconfigured" });
    } finally {
      server.close();
    }
  });
});

describe("signing key file", () => {
  it("creates a 0600 private JWK on first use and loads the same key afterwards", async () => {
    const dir = await mkdtemp(join(tmpdir(), "rotor-keys-"));
    try {
      const path = join(dir, "nested", "signing-key.json");
      const [a, b] = await Promise.all([loadOrCreateSigningKey(path), loadOrCreateSigningKey(path)]);
      expect(a.kid).toBe(b.kid);
      expect((await stat(path)).mode & 0o777).toBe(0o600);
      expect(JSON.parse(await readFile(path, "utf8"))).toMatchObject({ kty: "EC", crv: "P-521", d: expect.any(String), kid: a.kid });
      const again = await loadOrCreateSigningKey(path);
      expect(again.kid).toBe(a.kid);
      const jws = await signRequest(again.privateKey, again.kid, { type: "status", body: {} });
      await expect(verifyRequest(jws, jwksOf(a.publicJwk))).resolves.toMatchObject({ type: "status" });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("agent core", () => {
  const passwords = ["m4nager-secret", "cur'rent-secret", "n\\ew-secret"];
  const noPasswordIn = (response: AgentResponse) => {
    const text = JSON.stringify(response);
    for (const p of passwords) expect(text).not.toContain(p.replace(/\\/g, "\\\\"));
    for (const p of passwords) expect(text).not.toContain(p.replaceAll("'", "''"));
  };

  it("dispatches a verified request to the engine and answers the envelope", async () => {
    const engine = fakeEngine();
    const agent = createAgent(engine, { jwks });
    const response = await agent.handle(await signRequest(key.privateKey, key.kid, update));
    expect(response).toEqual({ status: "ok", body: { type: "updated" } });
    expect(engine.calls).toEqual(["updateCredential"]);
  });

  it("answers unauthorized without calling the engine", async () => {
    const engine = fakeEngine();
    const { key: other } = await generateSigningKey();
    const response = await createAgent(engine, { jwks }).handle(await signRequest(other.privateKey, key.kid, update));
    expect(response).toMatchObject({ status: "error", metadata: { code: "unauthorized", retryable: false } });
    expect(engine.calls).toEqual([]);
  });

  it("never lets a password through an error message, in any quoting", async () => {
    const echo = `could not run ALTER ROLE app PASSWORD 'n\\\\ew-secret' as admin/m4nager-secret: "cur'rent-secret" / 'cur''rent-secret' / ${encodeURIComponent("cur'rent-secret")}`;
    for (const fail of [() => new Error(echo), () => new AgentError("database_error", echo, true)]) {
      const response = await createAgent(fakeEngine(fail), { jwks, log: () => {} }).handle(
        await signRequest(key.privateKey, key.kid, update),
      );
      expect(response.status).toBe("error");
      noPasswordIn(response);
      expect(JSON.stringify(response)).toContain("[redacted]");
    }
  });

  it("keeps messages short, cutting only after scrubbing", () => {
    const secret = "s3cr3t-value";
    const long = "x".repeat(295) + secret;
    const out = scrub(long, [secret]);
    expect(out.length).toBeLessThanOrEqual(300);
    expect(out).not.toContain("s3cr3t");
  });

  it("reports a missing JWKS configuration as agent_misconfigured", async () => {
    expect(() => jwksFromEnv({})).toThrow(/ROTOR_JWKS/);
    expect(jwksFromEnv({ ROTOR_JWKS: JSON.stringify(jwks) })).toEqual(jwks);
    expect(jwksFromEnv({ ROTOR_JWKS_URL: "https://keys.example.com/jwks.json" })).toBeInstanceOf(URL);
    const saved = { ...process.env };
    delete process.env.ROTOR_JWKS;
    delete process.env.ROTOR_JWKS_URL;
    try {
      const response = await createAgent(fakeEngine()).handle(await signRequest(key.privateKey, key.kid, update));
      expect(response).toMatchObject({ status: "error", metadata: { code: "agent_misconfigured" } });
    } finally {
      process.env = saved;
    }
  });

  it("talks to the database at most ROTOR_AGENT_MAX_CONCURRENCY (default 16) requests at a time", async () => {
    expect(maxConcurrencyFromEnv({})).toBe(DEFAULT_AGENT_CONCURRENCY);
    expect(DEFAULT_AGENT_CONCURRENCY).toBe(16);
    expect(maxConcurrencyFromEnv({ ROTOR_AGENT_MAX_CONCURRENCY: "3" })).toBe(3);
    for (const bad of ["0", "-1", "2.5", "many"]) expect(() => maxConcurrencyFromEnv({ ROTOR_AGENT_MAX_CONCURRENCY: bad })).toThrow(/positive whole number/);

    let active = 0;
    let peak = 0;
    const slow = {
      ...fakeEngine(),
      updateCredential: async () => {
        peak = Math.max(peak, ++active);
        await new Promise((r) => setTimeout(r, 20));
        active--;
        return { type: "updated" as const };
      },
    };
    const saved = process.env.ROTOR_AGENT_MAX_CONCURRENCY;
    process.env.ROTOR_AGENT_MAX_CONCURRENCY = "3";
    try {
      const agent = createAgent(slow, { jwks });
      const requests = await Promise.all(Array.from({ length: 10 }, () => signRequest(key.privateKey, key.kid, update)));
      const responses = await Promise.all(requests.map((jws) => agent.handle(jws)));
      expect(responses.every((r) => r.status === "ok")).toBe(true);
      expect(peak).toBe(3);
    } finally {
      if (saved === undefined) delete process.env.ROTOR_AGENT_MAX_CONCURRENCY;
      else process.env.ROTOR_AGENT_MAX_CONCURRENCY = saved;
    }
  });

  it("serves the Lambda transport: { body: jws }, also base64-encoded", async () => {
    const agent = createAgent(fakeEngine(), { jwks });
    const jws = await signRequest(key.privateKey, key.kid, { type: "status", body: {} });
    const ok = { status: "ok", body: { type: "ok", engine: "fake", version: "1" } };
    expect(await agent.lambda({ body: jws })).toEqual(ok);
    expect(await agent.lambda({ body: Buffer.from(jws).toString("base64"), isBase64Encoded: true })).toEqual(ok);
    expect(await agent.lambda({})).toMatchObject({ status: "error", metadata: { code: "unauthorized" } });
  });

  describe("HTTP transport", () => {
    let server: Server;
    let url: string;
    beforeAll(async () => {
      server = await serve(createAgent(fakeEngine(), { jwks }), 0, "127.0.0.1");
      url = `http://127.0.0.1:${(server.address() as { port: number }).port}/`;
    });
    afterAll(() => new Promise<void>((r) => server.close(() => r())));

    it("answers a raw JWS and a JSON { body } POST", async () => {
      const jws = await signRequest(key.privateKey, key.kid, { type: "status", body: {} });
      for (const body of [jws, JSON.stringify({ body: jws })]) {
        const res = await fetch(url, { method: "POST", body });
        expect(res.status).toBe(200);
        expect(res.headers.get("content-type")).toBe("application/json");
        expect(await res.json()).toEqual({ status: "ok", body: { type: "ok", engine: "fake", version: "1" } });
      }
    });

    it("answers refusals in the envelope, and refuses other methods and oversized bodies", async () => {
      const bad = await fetch(url, { method: "POST", body: "not-a-jws" });
      expect(await bad.json()).toMatchObject({ status: "error", metadata: { code: "unauthorized" } });
      const get = await fetch(url);
      expect(get.status).toBe(405);
      expect(await get.json()).toMatchObject({ status: "error" });
      const big = await fetch(url, { method: "POST", body: "x".repeat(300 * 1024) });
      expect(big.status).toBe(413);
    });
  });
});
