import { z } from "zod";
import type { AgentResponse, ResultOf, UnsignedRequest } from "../agent-protocol/schemas.ts";
import { AgentResponseSchema } from "../agent-protocol/schemas.ts";
import { RotorError } from "../errors.ts";

/**
 * Roles Rotor assumes in a customer's account. Rotor's own policy allows sts:AssumeRole only
 * on `role/Rotor*` (no path) with an ExternalId, so any other name would fail at the first
 * call: refuse it when the secret is created instead.
 */
export const RotorRoleArnSchema = z
  .string()
  .regex(/^arn:aws[a-z-]*:iam::\d{12}:role\/Rotor[\w+=,.@-]*$/, "roleArn must be an IAM role ARN whose name starts with Rotor (no path): Rotor may assume only such roles");

/** Where an agent lives. In cloud mode Rotor never connects to a customer's database itself. */
export const AgentSpecSchema = z.discriminatedUnion("transport", [
  z.object({ transport: z.literal("local") }),
  z.object({
    transport: z.literal("http"),
    // The JWS is signed, not encrypted: its payload carries passwords, so it travels over TLS
    // unless the agent is on this machine.
    url: z.url({ protocol: /^https?$/ }).refine((u) => {
      const url = new URL(u);
      return url.protocol === "https:" || ["localhost", "127.0.0.1", "[::1]"].includes(url.hostname);
    }, "an agent URL must use https (plain http only to localhost): requests carry passwords"),
  }),
  z.object({
    transport: z.literal("lambda"),
    functionArn: z.string().regex(/^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:Rotor_[A-Za-z0-9_-]+(:[A-Za-z0-9_$-]+)?$/, "functionArn must name a Lambda function whose name starts with Rotor_"),
    roleArn: RotorRoleArnSchema,
    region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, "region must be an AWS region like us-east-1"),
  }),
]);
export type AgentSpec = z.infer<typeof AgentSpecSchema>;

/** Delivers a signed request to an agent and returns its raw answer. */
export interface AgentTransport {
  send(jws: string, engine: string): Promise<unknown>;
}
/** Builds the transport for a spec: the adapters (in-process, HTTP, Lambda) are wired by the runtime. */
export type TransportFactory = (spec: AgentSpec) => AgentTransport;

export interface RequestSigner {
  sign(request: UnsignedRequest): Promise<string>;
  jwks(): { keys: unknown[] };
}

/** An agent answered with an error, or could not be reached. The message never carries a value. */
export class AgentCallError extends RotorError {
  constructor(readonly agentCode: string, message: string, retryable: boolean) {
    super(`agent_${agentCode}`, message, retryable ? 503 : 422, retryable);
    this.name = "AgentCallError";
  }
}

/** Removes every secret the request carried from a text that came back from outside. */
export function scrub(text: string, secrets: string[]): string {
  let out = text;
  for (const s of secrets) if (s && s.length >= 4) out = out.split(s).join("[redacted]");
  return out.length > 300 ? out.slice(0, 300) + "…" : out;
}

export function secretsIn(request: UnsignedRequest): string[] {
  const found: string[] = [];
  const walk = (v: unknown, key = "") => {
    if (typeof v === "string" && /password/i.test(key)) found.push(v);
    else if (Array.isArray(v)) v.forEach((x) => walk(x, key));
    else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) walk(x, k);
  };
  walk(request.body);
  return found;
}

export class AgentClient {
  constructor(private readonly signer: RequestSigner, private readonly transports: TransportFactory) {}

  async call<T extends UnsignedRequest["type"]>(spec: AgentSpec, engine: string, request: Extract<UnsignedRequest, { type: T }>): Promise<ResultOf[T]> {
    const secrets = secretsIn(request);
    const jws = await this.signer.sign(request);
    let raw: unknown;
    try {
      raw = await this.transports(spec).send(jws, engine);
    } catch (e) {
      // A refusal by Rotor itself (e.g. a function name without Rotor_) is final, not an outage.
      if (e instanceof RotorError) throw new AgentCallError(e.code, scrub(e.message, secrets), false);
      throw new AgentCallError("unreachable", `agent unreachable (${spec.transport}): ${scrub((e as Error).message ?? String(e), secrets)}`, true);
    }
    const parsed = AgentResponseSchema.safeParse(raw);
    if (!parsed.success) throw new AgentCallError("bad_response", "agent answered something that is not a protocol response", true);
    const response = parsed.data as AgentResponse;
    if (response.status === "error") {
      const { code, message, retryable } = response.metadata;
      throw new AgentCallError(code, scrub(message, secrets), retryable);
    }
    return response.body as ResultOf[T];
  }
}
