import { recordActivity } from "./activity.ts";
import type { Deps } from "./context.ts";
import { conflict, notFound } from "./errors.ts";
import { ConditionFailed } from "./store/table.ts";

const PROJECTS_PK = "PROJECTS";
const projectKey = (name: string) => ({ pk: PROJECTS_PK, sk: `PROJECT#${name}` });
const configKey = (project: string, name: string) => ({ pk: `PROJECT#${project}`, sk: `CONFIG#${name}` });

export interface Project {
  name: string;
  createdAt: string;
  notifyEmail?: string;
}
export interface Config {
  project: string;
  name: string;
  createdAt: string;
}

export async function createProject(deps: Deps, actor: string, input: { name: string; notifyEmail?: string }): Promise<Project> {
  const project: Project = { name: input.name, createdAt: deps.now().toISOString(), notifyEmail: input.notifyEmail };
  try {
    await deps.table.put({ ...projectKey(input.name), kind: "project", ...project }, { expression: "attribute_not_exists(pk)" });
  } catch (e) {
    if (e instanceof ConditionFailed) throw conflict(`project '${input.name}' already exists`);
    throw e;
  }
  await recordActivity(deps, { type: "project.created", actor, project: input.name, detail: { name: input.name } });
  return project;
}

export async function listProjects(deps: Deps): Promise<Project[]> {
  const items = await deps.table.queryPrefix(PROJECTS_PK, "PROJECT#");
  return items.map((i) => ({ name: i.name as string, createdAt: i.createdAt as string, notifyEmail: i.notifyEmail as string | undefined }));
}

export async function getProject(deps: Deps, name: string): Promise<Project> {
  const item = await deps.table.get(projectKey(name).pk, projectKey(name).sk);
  if (!item) throw notFound(`project '${name}' does not exist`);
  return { name: item.name as string, createdAt: item.createdAt as string, notifyEmail: item.notifyEmail as string | undefined };
}

export async function createConfig(deps: Deps, actor: string, input: { project: string; name: string }): Promise<Config> {
  await getProject(deps, input.project);
  const config: Config = { project: input.project, name: input.name, createdAt: deps.now().toISOString() };
  try {
    await deps.table.put({ ...configKey(input.project, input.name), kind: "config", ...config }, { expression: "attribute_not_exists(pk)" });
  } catch (e) {
    if (e instanceof ConditionFailed) throw conflict(`config '${input.name}' already exists in project '${input.project}'`);
    throw e;
  }
  await recordActivity(deps, { type: "config.created", actor, project: input.project, config: input.name, detail: { name: input.name } });
  return config;
}

export async function listConfigs(deps: Deps, project: string): Promise<Config[]> {
  await getProject(deps, project);
  const items = await deps.table.queryPrefix(`PROJECT#${project}`, "CONFIG#");
  return items.map((i) => ({ project, name: i.name as string, createdAt: i.createdAt as string }));
}

/** Throws not_found unless the config exists; every config-scoped operation starts here. */
export async function requireConfig(deps: Deps, project: string, config: string): Promise<void> {
  const key = configKey(project, config);
  const item = await deps.table.get(key.pk, key.sk);
  if (item) return;
  await getProject(deps, project);
  throw notFound(`config '${config}' does not exist in project '${project}'`);
}
