import { createHash } from "node:crypto";
import { InvokeCommand, LambdaClient } from "@aws-sdk/client-lambda";
import { AssumeRoleCommand, STSClient } from "@aws-sdk/client-sts";
import type { AgentSpec, AgentTransport } from "../../agents/client.ts";
import { forbidden } from "../../errors.ts";

type LambdaSpec = Extract<AgentSpec, { transport: "lambda" }>;
export interface TemporaryCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  expiration: Date;
}

/** Assumed-role credentials per role (and external id), kept until a minute before they expire. */
export class AssumedRoleCache {
  private readonly entries = new Map<string, TemporaryCredentials>();
  get(key: string, now: Date) {
    const c = this.entries.get(key);
    return c && c.expiration.getTime() - 60_000 > now.getTime() ? c : undefined;
  }
  set(key: string, c: TemporaryCredentials) {
    this.entries.set(key, c);
  }
}
const sharedCache = new AssumedRoleCache();

export interface LambdaTransportOptions {
  /** The workplace's ExternalId, required by the customer's role trust policy. */
  externalId: string;
  sts?: (region: string) => STSClient;
  lambda?: (region: string, credentials: TemporaryCredentials) => LambdaClient;
  /** Shared across transports by default, so a transport per call still reuses credentials. */
  cache?: AssumedRoleCache;
  now?: () => Date;
}

/** The function's name: after `function:`, before any `:qualifier`. */
export function lambdaFunctionName(functionArn: string): string {
  const i = functionArn.indexOf(":function:");
  return (i >= 0 ? functionArn.slice(i + ":function:".length) : functionArn).split(":")[0];
}

/** Cloud agent transport: assume the customer's role, then invoke their `Rotor_` agent Lambda. */
export class LambdaAgentTransport implements AgentTransport {
  constructor(private readonly spec: LambdaSpec, private readonly options: LambdaTransportOptions) {}

  async send(jws: string): Promise<unknown> {
    const { functionArn, roleArn, region } = this.spec;
    if (!lambdaFunctionName(functionArn).startsWith("Rotor_")) throw forbidden("Rotor only invokes agent functions whose name starts with Rotor_");
    const credentials = await this.credentials();
    const lambda = (this.options.lambda ?? ((r, c) => new LambdaClient({ region: r, credentials: c })))(region, credentials);
    try {
      const out = await lambda.send(new InvokeCommand({ FunctionName: functionArn, InvocationType: "RequestResponse", Payload: JSON.stringify({ body: jws }) }));
      const text = out.Payload ? Buffer.from(out.Payload).toString("utf8") : "";
      if (out.FunctionError) throw new Error(`agent function failed (${out.FunctionError}): ${describeError(text, jws)}`);
      try {
        return JSON.parse(text);
      } catch {
        throw new Error("agent function answered something that is not JSON");
      }
    } finally {
      if (!this.options.lambda) lambda.destroy();
    }
  }

  private async credentials(): Promise<TemporaryCredentials> {
    const { externalId, cache = sharedCache, now = () => new Date() } = this.options;
    const key = `${this.spec.roleArn}\n${externalId}`;
    const cached = cache.get(key, now());
    if (cached) return cached;
    const sts = (this.options.sts ?? ((r) => new STSClient({ region: r })))(this.spec.region);
    const out = await sts.send(
      new AssumeRoleCommand({
        RoleArn: this.spec.roleArn,
        RoleSessionName: `rotor-${createHash("sha256").update(externalId).digest("hex").slice(0, 12)}`,
        ExternalId: externalId,
        DurationSeconds: 900,
      }),
    );
    const c = out.Credentials;
    if (!c?.AccessKeyId || !c.SecretAccessKey || !c.SessionToken || !c.Expiration) throw new Error("STS AssumeRole returned no credentials");
    const creds = { accessKeyId: c.AccessKeyId, secretAccessKey: c.SecretAccessKey, sessionToken: c.SessionToken, expiration: c.Expiration };
    cache.set(key, creds);
    return creds;
  }
}

/** A Lambda error payload, reduced to its type and a short message without tokens (the JWS carries values). */
function describeError(text: string, jws: string): string {
  let type = "Error";
  let message = text;
  try {
    const parsed = JSON.parse(text) as { errorType?: unknown; errorMessage?: unknown };
    if (typeof parsed.errorType === "string") type = parsed.errorType;
    message = typeof parsed.errorMessage === "string" ? parsed.errorMessage : "";
  } catch {
    /* not JSON: keep the text */
  }
  const scrubbed = message
    .split(jws)
    .join("[jws]")
    .replace(/[A-Za-z0-9_-]{24,}(\.[A-Za-z0-9_-]*){0,2}/g, "[redacted]");
  return `${type.slice(0, 60)}${scrubbed ? `: ${scrubbed.slice(0, 200)}` : ""}`;
}
