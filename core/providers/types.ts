import type { AgentClient, AgentSpec } from "../agents/client.ts";

/**
 * A rotation provider: how one kind of target system rotates a credential. Small on
 * purpose (after Vault's dbplugin): request in, result out, no logging or retries inside;
 * the workflow and wrappers do that.
 *
 * `updater` providers change the value of a fixed instance (ALTER USER); `issuer`
 * providers create a new instance and delete the old inactive one (two IAM access keys).
 * The workflow does not care which: it persists `pending` before `apply`; an issuer, whose
 * target makes the value, hands it back as `issued` and the workflow stores it (sealed) as
 * PENDING before it tests and finishes. `apply` must converge when re-run after a crash at
 * any point (an issuer: replace what it issued for this instance, never pile up a second one).
 */
export interface Credential {
  username: string;
  password: string;
}

export interface Target {
  connection: { host: string; port: number; database: string; ssl?: boolean };
  managingUser: Credential;
  agent: AgentSpec;
}

export type TestResult = { valid: true } | { valid: false; reason: string };

export interface ApplyRequest {
  target: Target;
  /** The instance being rotated, with the value Rotor holds for it now and the new one. */
  username: string;
  current: string;
  pending: string;
}

export interface ApplyResult {
  outcome: "updated" | "already_applied";
  /** Issuers only: the instance the target created (e.g. an access key id and its secret). */
  issued?: Credential;
}

export interface RotationProvider {
  readonly type: string;
  readonly strategy: "updater" | "issuer";
  readonly defaultPort: number;
  /** A fresh value for the inactive instance (issuers may return a placeholder and fill it in apply). */
  generate(): string;
  /** Makes the target hold `pending` for the instance (`already_applied` when it already did), or, for an issuer, issues a new one. */
  apply(agents: AgentClient, request: ApplyRequest): Promise<ApplyResult>;
  test(agents: AgentClient, target: Target, credentials: Credential[]): Promise<TestResult>;
}
