import type { AgentClient, AgentSpec } from "../agents/client.ts";

/**
 * A dynamic-secret provider: issues one unique credential per lease and revokes it.
 * Like rotation providers (after Vault's dbplugin: NewUser / DeleteUser), request in,
 * result out; retries, backoff, logging and the lease bookkeeping live outside.
 */
export interface DynamicContext {
  agents: AgentClient;
  /** The decrypted recipe: connection + managing user, or the AWS integration + policy. */
  recipe: DynamicRecipe;
  now: () => Date;
}

export type DynamicRecipe =
  | {
      provider: "postgres" | "mysql";
      connection: { host: string; port: number; database: string; ssl?: boolean };
      managingUser: { username: string; password: string };
      grants: string[];
      agent: AgentSpec;
    }
  | {
      provider: "aws-iam-user";
      integration: AwsIntegration;
      /** The IAM policy document (JSON text) attached inline to every leased user. */
      policy: string;
    };

/** How Rotor reaches the customer's IAM: a stored access key, or a role to assume (with ExternalId). */
export type AwsIntegration =
  | { type: "accessKey"; accessKeyId: string; secretAccessKey: string; region?: string }
  | { type: "assumeRole"; roleArn: string; externalId: string; region?: string };

export interface IssueRequest {
  leaseId: string;
  expiresAt: Date;
  /** From `newHandle()`, already persisted with the lease: a crash mid-issue leaves nothing Rotor can't find. */
  handle: Record<string, string>;
}

/** `values` go to the reader once (suffixes of NAME_); `handle` (the request's, plus ids learnt while issuing) is what revoke needs — never a secret. */
export interface Issued {
  values: Record<string, string>;
  handle: Record<string, string>;
}

export interface DynamicProvider {
  readonly type: string;
  /** Names the credential before it exists (user name), so the lease can be stored first. */
  newHandle(): Record<string, string>;
  /** Throws a RotorError (422) with a clear message when the integration cannot work. */
  check(ctx: DynamicContext): Promise<void>;
  /** Creates the credential; on failure cleans up whatever it created, then throws. */
  issue(ctx: DynamicContext, request: IssueRequest): Promise<Issued>;
  /** Moves the credential's own expiry, where the target has one (PostgreSQL VALID UNTIL). */
  renew(ctx: DynamicContext, handle: Record<string, string>, expiresAt: Date): Promise<void>;
  /** Idempotent: a credential already gone counts as revoked. */
  revoke(ctx: DynamicContext, handle: Record<string, string>): Promise<"revoked" | "already_gone">;
}
