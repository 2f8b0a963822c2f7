import {
  compactVerify,
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  type CryptoKey,
  type FlattenedJWSInput,
  type JSONWebKeySet,
  type JWSHeaderParameters,
} from "jose";
import type { z } from "zod";
import { AgentRequestSchema, MAX_CLOCK_SKEW_MS, REQUEST_TYPES, type AgentErrorCode, type AgentRequest } from "./schemas.ts";

/**
 * The agent's side: check that a request comes from Rotor, is fresh, and is one the agent
 * understands. Only ES512 is ever accepted: a verifier that lets the token pick its
 * algorithm can be handed "none" or an HMAC keyed with the public key.
 */

/** An expected failure: its code and message are safe to send back to Rotor. */
export class AgentError extends Error {
  constructor(
    readonly code: AgentErrorCode | (string & {}),
    message: string,
    readonly retryable = false,
  ) {
    super(message);
    this.name = "AgentError";
  }
}

export type KeyResolver = (header: JWSHeaderParameters, token: FlattenedJWSInput) => Promise<CryptoKey | Uint8Array>;
/** A JWKS document, the https URL of one, or a resolver built once and reused (keeps the remote cache). */
export type JwksInput = JSONWebKeySet | URL | KeyResolver;

const MAX_JWS_LENGTH = 256 * 1024;

export function keyResolverOf(jwks: JwksInput): KeyResolver {
  if (typeof jwks === "function") return jwks;
  if (jwks instanceof URL) {
    // A JWKS fetched over plain HTTP could be swapped by anyone on the path.
    const local = jwks.hostname === "localhost" || jwks.hostname === "127.0.0.1" || jwks.hostname === "[::1]";
    if (jwks.protocol !== "https:" && !local) throw new AgentError("agent_misconfigured", "the JWKS URL must use https");
    const remote = createRemoteJWKSet(jwks);
    return async (header, token) => {
      try {
        return await remote(header, token);
      } catch (e) {
        if (e instanceof errors.JWKSNoMatchingKey || e instanceof errors.JWKSMultipleMatchingKeys) throw e;
        throw new AgentError("unavailable", "could not fetch the JWKS", true);
      }
    };
  }
  if (!Array.isArray(jwks?.keys)) throw new AgentError("agent_misconfigured", "the JWKS has no keys array");
  return createLocalJWKSet(jwks);
}

const refuse = (message: string) => new AgentError("unauthorized", message);
const invalid = (message: string) => new AgentError("invalid_request", message);

/** Verify, check freshness, parse. Throws AgentError for anything it refuses. */
export async function verifyRequest(compactJws: string, jwks: JwksInput, now: Date = new Date()): Promise<AgentRequest> {
  if (typeof compactJws !== "string" || compactJws.length === 0) throw refuse("missing signed request");
  if (compactJws.length > MAX_JWS_LENGTH) throw refuse("signed request too large");

  let alg: unknown;
  try {
    alg = decodeProtectedHeader(compactJws).alg;
  } catch {
    throw refuse("malformed JWS");
  }
  if (alg !== "ES512") throw refuse(`algorithm ${String(alg).slice(0, 20)} is not accepted (only ES512)`);

  let payload: Uint8Array;
  try {
    ({ payload } = await compactVerify(compactJws, keyResolverOf(jwks), { algorithms: ["ES512"] }));
  } catch (e) {
    if (e instanceof AgentError) throw e;
    if (e instanceof errors.JWKSNoMatchingKey) throw refuse("no key in the JWKS matches the request's kid");
    if (e instanceof errors.JWSSignatureVerificationFailed) throw refuse("signature verification failed");
    throw refuse("malformed JWS");
  }

  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(payload));
  } catch {
    throw invalid("payload is not JSON");
  }

  // Freshness before the body's shape: a replayed old request is refused as such.
  const timestamp = Date.parse(typeof raw === "object" && raw !== null ? String((raw as { timestamp?: unknown }).timestamp) : "");
  if (Number.isNaN(timestamp)) throw invalid("timestamp is missing or not ISO-8601");
  if (Math.abs(timestamp - now.getTime()) > MAX_CLOCK_SKEW_MS) {
    throw refuse(`request timestamp is more than ${MAX_CLOCK_SKEW_MS / 1000} s from the agent's clock`);
  }

  const type = (raw as { type?: unknown }).type;
  if (!REQUEST_TYPES.includes(type as never)) throw invalid(`unknown request type ${JSON.stringify(type)?.slice(0, 40)}`);
  const parsed = AgentRequestSchema.safeParse(raw);
  if (!parsed.success) throw invalid(`invalid ${String(type)} request: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

/** Paths and messages only: zod messages do not echo input values, and neither do we. */
function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`)
    .join("; ");
}
