import { z } from "zod";
import { recordActivity } from "../activity.ts";
import { AgentCallError, AgentSpecSchema, RotorRoleArnSchema } from "../agents/client.ts";
import { conflict, isRotorError, notFound, RotorError } from "../errors.ts";
import { secretNameSchema, slugSchema } from "../names.ts";
import { requireConfig } from "../projects.ts";
import { dynamicProvider } from "../providers/dynamic-index.ts";
import type { AwsIntegration, DynamicContext, DynamicRecipe } from "../providers/dynamic-types.ts";
import type { RotationDeps } from "../rotation/model.ts";
import { configPk } from "../secrets/static.ts";
import { ConditionFailed } from "../store/table.ts";
import { counterKey, dynamicBinding, dynamicKey, type DynamicItem, type DynamicRef } from "./model.ts";

const DEFAULT_TTL = 1800;
const MAX_TTL_CEILING = 7 * 86400;

const credential = z.object({ username: z.string().min(1).max(128), password: z.string().min(1).max(1024) });
const common = {
  project: slugSchema,
  config: slugSchema,
  name: secretNameSchema.refine((n) => n.length <= 200, "dynamic secret names are at most 200 characters"),
  defaultTtlSec: z.number().int().positive().max(MAX_TTL_CEILING).default(DEFAULT_TTL),
  maxTtlSec: z.number().int().positive().max(MAX_TTL_CEILING).default(86400),
  maxLeases: z.number().int().positive().max(100_000).default(1000),
};
const policyText = z
  .union([z.string(), z.record(z.string(), z.unknown())])
  .transform((p) => (typeof p === "string" ? p : JSON.stringify(p)))
  .superRefine((text, ctx) => {
    let doc: { Statement?: unknown };
    try {
      doc = JSON.parse(text);
    } catch {
      return ctx.addIssue({ code: "custom", message: "policy must be an IAM policy document in JSON" });
    }
    const st = doc?.Statement;
    if (!st || (Array.isArray(st) && st.length === 0) || (typeof st !== "object")) ctx.addIssue({ code: "custom", message: "policy must have a Statement" });
    if (text.length > 2048 * 5) ctx.addIssue({ code: "custom", message: "policy is too large for an inline IAM user policy" });
  });

export const CreateDynamicSchema = z
  .discriminatedUnion("provider", [
    z.object({
      ...common,
      provider: z.enum(["postgres", "mysql"]),
      connection: z.object({ host: z.string().min(1).max(255), port: z.number().int().min(1).max(65535).optional(), database: z.string().min(1).max(128), ssl: z.boolean().optional() }),
      managingUser: credential,
      grants: z.array(z.string().min(1).max(4096)).max(50).default([]),
      agent: AgentSpecSchema.default({ transport: "local" }),
    }),
    z.object({
      ...common,
      provider: z.literal("aws-iam-user"),
      integration: z.discriminatedUnion("type", [
        z.object({ type: z.literal("accessKey"), accessKeyId: z.string().min(16).max(128), secretAccessKey: z.string().min(16).max(256), region: z.string().optional() }),
        z.object({ type: z.literal("assumeRole"), roleArn: RotorRoleArnSchema, externalId: z.string().min(2).max(1224), region: z.string().optional() }),
      ]),
      policy: policyText,
    }),
  ])
  .superRefine((v, ctx) => {
    if (v.defaultTtlSec > v.maxTtlSec) ctx.addIssue({ code: "custom", path: ["defaultTtlSec"], message: "defaultTtlSec cannot exceed maxTtlSec" });
  });
export type CreateDynamicInput = z.input<typeof CreateDynamicSchema>;

export function dynamicView(item: DynamicItem, activeLeases: number) {
  return {
    project: item.project,
    config: item.config,
    name: item.name,
    provider: item.provider,
    connection: item.connection ? { host: item.connection.host, port: item.connection.port, database: item.connection.database } : null,
    managingUsername: item.managingUser?.username ?? null,
    grants: item.grants ?? [],
    integration: item.integrationKind ?? null,
    policy: item.policy ?? null,
    defaultTtlSec: item.defaultTtlSec,
    maxTtlSec: item.maxTtlSec,
    maxLeases: item.maxLeases,
    activeLeases,
    createdAt: item.createdAt,
  };
}

export async function loadDynamic(deps: RotationDeps, ref: DynamicRef): Promise<DynamicItem> {
  const key = dynamicKey(ref);
  const item = await deps.table.get<DynamicItem>(key.pk, key.sk);
  if (!item) throw notFound(`dynamic secret '${ref.name}' does not exist in ${ref.project}/${ref.config}`);
  return item;
}

/** Decrypts a recipe for a provider call; lives only for that call. */
export async function contextOf(deps: RotationDeps, item: DynamicItem): Promise<DynamicContext> {
  const ref = { project: item.project, config: item.config, name: item.name };
  let recipe: DynamicRecipe;
  if (item.provider === "aws-iam-user") {
    recipe = {
      provider: "aws-iam-user",
      integration: JSON.parse(await deps.envelope.open(item.integration!, dynamicBinding(ref, "integration"))) as AwsIntegration,
      policy: item.policy!,
    };
  } else {
    recipe = {
      provider: item.provider,
      connection: item.connection!,
      managingUser: { username: item.managingUser!.username, password: await deps.envelope.open(item.managingUser!.password, dynamicBinding(ref, "managingUser")) },
      grants: item.grants ?? [],
      agent: item.agent!,
    };
  }
  return { agents: deps.agents, recipe, now: deps.now };
}

export async function activeLeaseCount(deps: RotationDeps, ref: DynamicRef): Promise<number> {
  const c = await deps.table.get(counterKey(ref).pk, counterKey(ref).sk);
  return Number(c?.active ?? 0);
}

export async function createDynamic(deps: RotationDeps, actor: string, raw: CreateDynamicInput) {
  const input = CreateDynamicSchema.parse(raw);
  const ref: DynamicRef = { project: input.project, config: input.config, name: input.name };
  await requireConfig(deps, ref.project, ref.config);
  const now = deps.now().toISOString();
  const base = { ...dynamicKey(ref), kind: "dynamic" as const, ...ref, defaultTtlSec: input.defaultTtlSec, maxTtlSec: input.maxTtlSec, maxLeases: input.maxLeases, createdAt: now };
  let item: DynamicItem;
  if (input.provider === "aws-iam-user") {
    item = {
      ...base,
      provider: "aws-iam-user",
      integration: await deps.envelope.seal(JSON.stringify(input.integration), dynamicBinding(ref, "integration")),
      integrationKind: input.integration.type,
      policy: input.policy,
    };
  } else {
    const provider = input.provider;
    item = {
      ...base,
      provider,
      connection: { ...input.connection, port: input.connection.port ?? (provider === "postgres" ? 5432 : 3306) },
      managingUser: { username: input.managingUser.username, password: await deps.envelope.seal(input.managingUser.password, dynamicBinding(ref, "managingUser")) },
      grants: input.grants,
      agent: input.agent,
    };
  }
  // The integration must work before anyone relies on it.
  try {
    await dynamicProvider(item.provider).check(await contextOf(deps, item));
  } catch (e) {
    if (e instanceof AgentCallError) throw new RotorError("integration_failed", `the ${item.provider} integration does not work: ${e.message}`, 422);
    if (isRotorError(e) && e.status < 500) throw new RotorError(e.code === "invalid_request" ? "invalid_request" : "integration_failed", e.message, e.status === 400 ? 400 : 422);
    throw new RotorError("integration_failed", `the ${item.provider} integration does not work: ${(e as Error).message}`, 422);
  }
  try {
    await deps.table.put(item, { expression: "attribute_not_exists(pk)" });
  } catch (e) {
    if (e instanceof ConditionFailed) throw conflict(`dynamic secret '${ref.name}' already exists in ${ref.project}/${ref.config}`);
    throw e;
  }
  await recordActivity(deps, { type: "dynamic.created", actor, project: ref.project, config: ref.config, changeId: `dyn-create-${ref.project}-${ref.config}-${ref.name}-${now}`, detail: { name: ref.name, provider: item.provider } });
  return dynamicView(item, 0);
}

export async function listDynamic(deps: RotationDeps, project: string, config: string) {
  await requireConfig(deps, project, config);
  const items = await deps.table.queryPrefix<DynamicItem>(configPk(project, config), "DYNAMIC#");
  return Promise.all(items.map(async (i) => dynamicView(i, await activeLeaseCount(deps, i))));
}

export async function getDynamic(deps: RotationDeps, ref: DynamicRef) {
  const item = await loadDynamic(deps, ref);
  return dynamicView(item, await activeLeaseCount(deps, ref));
}

export async function deleteDynamic(deps: RotationDeps, actor: string, ref: DynamicRef) {
  await loadDynamic(deps, ref);
  const active = await activeLeaseCount(deps, ref);
  if (active > 0) throw conflict(`dynamic secret '${ref.name}' has ${active} active lease(s): revoke them first (rotor leases revoke --dynamic ${ref.name})`);
  const key = dynamicKey(ref);
  await deps.table.delete(key.pk, key.sk);
  await recordActivity(deps, { type: "dynamic.deleted", actor, project: ref.project, config: ref.config, detail: { name: ref.name } });
}
