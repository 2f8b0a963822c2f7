import { randomBytes } from "node:crypto";
import { chmod, link, mkdir, readFile, stat, unlink, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { calculateJwkThumbprint, CompactSign, exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from "jose";
import { AgentRequestSchema, type UnsignedRequest } from "./schemas.ts";

/** Rotor's side of the protocol: the request-signing key (ES512, P-521) and its JWKS. */
export const SIGNING_ALG = "ES512";

export interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  /** With kid, alg and use set: ready to publish. */
  publicJwk: JWK;
}

/** RFC 7638 thumbprint: the same key always gets the same kid, wherever it is loaded. */
export async function kidOf(jwk: JWK): Promise<string> {
  return calculateJwkThumbprint({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y }, "sha256");
}

function publicPart(jwk: JWK, kid: string): JWK {
  return { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y, kid, alg: SIGNING_ALG, use: "sig" };
}

/** A new key pair; the private JWK (with kid) is for the caller to store. */
export async function generateSigningKey(): Promise<{ privateJwk: JWK; key: SigningKey }> {
  const { privateKey } = await generateKeyPair(SIGNING_ALG, { extractable: true });
  const jwk = await exportJWK(privateKey);
  const kid = await kidOf(jwk);
  const privateJwk = { ...jwk, kid, alg: SIGNING_ALG };
  return { privateJwk, key: await importSigningKey(privateJwk) };
}

export async function importSigningKey(privateJwk: JWK): Promise<SigningKey> {
  if (privateJwk.kty !== "EC" || privateJwk.crv !== "P-521" || !privateJwk.d) {
    throw new Error("the signing key must be a private EC P-521 JWK");
  }
  const kid = await kidOf(privateJwk);
  const privateKey = (await importJWK({ ...privateJwk, ext: false }, SIGNING_ALG)) as CryptoKey;
  return { kid, privateKey, publicJwk: publicPart(privateJwk, kid) };
}

/**
 * The signing key kept as a private JWK in a 0600 file, created on first use. Creation
 * writes a temp file and hard-links it into place, so two processes starting together
 * end up with the same key and nobody reads a half-written file.
 */
export async function loadOrCreateSigningKey(path: string): Promise<SigningKey> {
  try {
    return await readKeyFile(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const { privateJwk } = await generateSigningKey();
  const temp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  await writeFile(temp, JSON.stringify(privateJwk) + "\n", { mode: 0o600, flag: "wx" });
  try {
    await link(temp, path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e; // lost the race: use the winner's key
  } finally {
    await unlink(temp);
  }
  return readKeyFile(path);
}

async function readKeyFile(path: string): Promise<SigningKey> {
  const text = await readFile(path, "utf8");
  // A private key readable by others is already a problem; at least stop it getting worse.
  if (((await stat(path)).mode & 0o077) !== 0) await chmod(path, 0o600);
  let jwk: JWK;
  try {
    jwk = JSON.parse(text) as JWK;
  } catch {
    throw new Error(`signing key file ${path} is not a JSON JWK`);
  }
  return importSigningKey(jwk);
}

/** The document agents fetch or are configured with (ROTOR_JWKS / ROTOR_JWKS_URL). */
export function jwksOf(...publicJwks: JWK[]): { keys: JWK[] } {
  // Never publish a private part, whatever the caller passed.
  return { keys: publicJwks.map(({ d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, k: _k, ...pub }) => pub) };
}

/** Compact JWS of the request, stamped with the current time (agents allow 30 s of skew). */
export async function signRequest(
  privateKey: CryptoKey,
  kid: string,
  request: UnsignedRequest,
  now: Date = new Date(),
): Promise<string> {
  const payload = { ...request, timestamp: now.toISOString() };
  // Refuse to sign what no agent would accept: a bug here should fail loudly, in Rotor.
  const checked = AgentRequestSchema.safeParse(payload);
  if (!checked.success) {
    const issue = checked.error.issues[0];
    throw new Error(`refusing to sign an invalid ${request.type} request: ${issue?.path.join(".")}: ${issue?.message}`);
  }
  return new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    .setProtectedHeader({ alg: SIGNING_ALG, kid })
    .sign(privateKey);
}
