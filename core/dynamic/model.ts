import { bindingFor, type SealedValue } from "../crypto/envelope.ts";
import type { AgentSpec } from "../agents/client.ts";
import type { Item } from "../store/table.ts";
import { configPk } from "../secrets/static.ts";

export interface DynamicRef {
  project: string;
  config: string;
  name: string;
}

/** The recipe of a dynamic secret. Its secrets (managing password, AWS integration) are sealed. */
export interface DynamicItem extends Item {
  kind: "dynamic";
  project: string;
  config: string;
  name: string;
  provider: "postgres" | "mysql" | "aws-iam-user";
  connection?: { host: string; port: number; database: string; ssl?: boolean };
  managingUser?: { username: string; password: SealedValue };
  grants?: string[];
  agent?: AgentSpec;
  integration?: SealedValue;
  integrationKind?: "accessKey" | "assumeRole";
  policy?: string;
  defaultTtlSec: number;
  maxTtlSec: number;
  maxLeases: number;
  createdAt: string;
}

export type LeaseState = "issuing" | "active" | "revoked";

export interface LeaseItem extends Item {
  kind: "lease";
  leaseId: string;
  project: string;
  config: string;
  dynamic: string;
  provider: string;
  handle: Record<string, string>;
  state: LeaseState;
  createdAt: string;
  expiresAt: string;
  /** createdAt + the recipe's max TTL: renewals never pass it. */
  maxExpiresAt: string;
  revokeFailures: number;
  stuck?: boolean;
  lastError?: { code: string; message: string; at: string };
  revokedAt?: string;
  forced?: boolean;
}

export const LEASE_DUE = "DUE#LEASE";
export const dynamicKey = (ref: DynamicRef) => ({ pk: configPk(ref.project, ref.config), sk: `DYNAMIC#${ref.name}` });
/** The active-lease counter lives apart from the recipe so counting never races recipe edits. */
export const counterKey = (ref: DynamicRef) => ({ pk: configPk(ref.project, ref.config), sk: `DYNCOUNT#${ref.name}` });
export const leaseKey = (leaseId: string) => ({ pk: `LEASE#${leaseId}`, sk: "LEASE" });
export const leaseIndexPk = (ref: DynamicRef) => `LEASES#${ref.project}#${ref.config}#${ref.name}`;
export const dynamicBinding = (ref: DynamicRef, field: string) =>
  bindingFor({ purpose: "dynamic", project: ref.project, config: ref.config, name: ref.name, field });

export const leaseView = (l: LeaseItem) => ({
  leaseId: l.leaseId,
  project: l.project,
  config: l.config,
  dynamic: l.dynamic,
  provider: l.provider,
  username: l.handle.username ?? l.handle.userName,
  state: l.state,
  createdAt: l.createdAt,
  expiresAt: l.expiresAt,
  maxExpiresAt: l.maxExpiresAt,
  revokedAt: l.revokedAt ?? null,
  revokeFailures: l.revokeFailures,
  stuck: !!l.stuck,
  forced: !!l.forced,
  lastError: l.lastError ?? null,
});
export type LeaseView = ReturnType<typeof leaseView>;
