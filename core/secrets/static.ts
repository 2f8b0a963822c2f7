import { recordActivity } from "../activity.ts";
import type { Deps } from "../context.ts";
import { bindingFor, type SealedValue } from "../crypto/envelope.ts";
import { conflict, notFound } from "../errors.ts";
import { newId } from "../ids.ts";
import { requireConfig } from "../projects.ts";
import { ConditionFailed, type Item } from "../store/table.ts";

/**
 * Static secrets of a config. One item per secret holds its current version (the state);
 * one item per version holds history (derived, written after, keyed by version).
 * A delete is a tombstone version, so the version chain never restarts.
 */
export const configPk = (project: string, config: string) => `CFG#${project}#${config}`;
const secretSk = (name: string) => `SECRET#${name}`;
const versionSk = (name: string, version: number) => `SECRETV#${name}#${String(version).padStart(10, "0")}`;

interface SecretItem extends Item {
  name: string;
  version: number;
  sealed?: SealedValue;
  deleted?: boolean;
  updatedAt: string;
  updatedBy: string;
}

export interface SecretMeta {
  name: string;
  version: number;
  updatedAt: string;
}

const binding = (project: string, config: string, name: string, version: number) =>
  bindingFor({ purpose: "secret", project, config, name, version });

export async function setSecrets(
  deps: Deps,
  actor: string,
  project: string,
  config: string,
  changes: Record<string, string | null>,
): Promise<{ changed: SecretMeta[] }> {
  await requireConfig(deps, project, config);
  const changed: SecretMeta[] = [];
  const changeId = newId("chg");
  try {
    for (const [name, value] of Object.entries(changes)) {
      const meta = await writeOne(deps, actor, project, config, name, value);
      if (meta) changed.push(meta);
    }
  } finally {
    // Even when a later write fails, what did change is recorded and announced.
    if (changed.length > 0) await recordChange(deps, actor, project, config, changeId, changes, changed);
  }
  return { changed };
}

async function recordChange(deps: Deps, actor: string, project: string, config: string, changeId: string, changes: Record<string, string | null>, changed: SecretMeta[]) {
  {
    await recordActivity(deps, {
      type: "secrets.changed",
      actor,
      project,
      config,
      changeId,
      detail: { names: changed.map((c) => c.name), deleted: changed.filter((c) => changes[c.name] === null).map((c) => c.name) },
    });
  }
}

async function writeOne(deps: Deps, actor: string, project: string, config: string, name: string, value: string | null) {
  for (let attempt = 0; attempt < 12; attempt++) {
    const pk = configPk(project, config);
    const current = await deps.table.get<SecretItem>(pk, secretSk(name));
    if (value === null && (!current || current.deleted)) return undefined; // deleting what isn't there changes nothing
    const version = (current?.version ?? 0) + 1;
    const at = deps.now().toISOString();
    const sealed = value === null ? undefined : await deps.envelope.seal(value, binding(project, config, name, version));
    const item: SecretItem = { pk, sk: secretSk(name), kind: "secret", name, version, sealed, deleted: value === null, updatedAt: at, updatedBy: actor };
    try {
      await deps.table.put(
        item,
        current ? { expression: "version = :v", values: { ":v": current.version } } : { expression: "attribute_not_exists(pk)" },
      );
    } catch (e) {
      if (e instanceof ConditionFailed) {
        // Someone else wrote a version first: rebase on it, after a jittered pause so
        // concurrent writers spread out instead of colliding again.
        await new Promise((r) => setTimeout(r, Math.random() * 10 * 2 ** Math.min(attempt, 6)));
        continue;
      }
      throw e;
    }
    await deps.table.putIfAbsent({ ...item, sk: versionSk(name, version), kind: "secret-version" });
    return { name, version, updatedAt: at };
  }
  throw conflict(`secret '${name}' is being changed concurrently; try again`);
}

export async function listSecrets(deps: Deps, project: string, config: string): Promise<Array<SecretMeta & { value: string }>> {
  await requireConfig(deps, project, config);
  const items = await deps.table.queryPrefix<SecretItem>(configPk(project, config), "SECRET#");
  const live = items.filter((i) => !i.deleted && i.sealed);
  return Promise.all(
    live.map(async (i) => ({
      name: i.name,
      version: i.version,
      updatedAt: i.updatedAt,
      value: await deps.envelope.open(i.sealed!, binding(project, config, i.name, i.version)),
    })),
  );
}

export async function getSecret(deps: Deps, project: string, config: string, name: string) {
  await requireConfig(deps, project, config);
  const item = await deps.table.get<SecretItem>(configPk(project, config), secretSk(name));
  if (!item || item.deleted || !item.sealed) throw notFound(`secret '${name}' does not exist in ${project}/${config}`);
  const value = await deps.envelope.open(item.sealed, binding(project, config, name, item.version));
  return { name, version: item.version, updatedAt: item.updatedAt, value };
}

export async function listVersions(deps: Deps, project: string, config: string, name: string) {
  await requireConfig(deps, project, config);
  const items = await deps.table.queryPrefix<SecretItem>(configPk(project, config), `SECRETV#${name}#`);
  return items.map((i) => ({ version: i.version, deleted: !!i.deleted, updatedAt: i.updatedAt, updatedBy: i.updatedBy }));
}
