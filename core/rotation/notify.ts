import { getProject } from "../projects.ts";
import type { RotationDeps } from "./model.ts";

/** Emails a project's notification address (or the operator's default). False when nobody is configured. */
export async function notifyProject(deps: Pick<RotationDeps, "table" | "notifier" | "settings" | "now" | "envelope" | "events">, project: string, message: { subject: string; text: string }) {
  const to = (await getProject(deps, project)).notifyEmail ?? deps.settings.defaultNotifyEmail;
  if (!to) {
    console.warn(`no notification address for project ${project}: "${message.subject}" not emailed`);
    return false;
  }
  await deps.notifier.send({ to, ...message });
  return true;
}
