import type { Command } from "commander";
import { clientFor, print, printTable, projectOf } from "../context.ts";

export function registerProjects(program: Command) {
  const projects = program.command("projects").description("manage projects");
  projects
    .command("create <name>")
    .option("--notify-email <address>", "where rotation and lease alerts go")
    .action(async (name: string, opts: { notifyEmail?: string }, cmd: Command) => {
      await clientFor(cmd).request("POST", "/v3/projects", { body: { name, notifyEmail: opts.notifyEmail } });
      print(`created project ${name}`);
    });
  projects.command("list").action(async (_opts, cmd: Command) => {
    const { projects } = await clientFor(cmd).request<{ projects: Array<Record<string, unknown>> }>("GET", "/v3/projects");
    printTable(projects, ["name", "createdAt", "notifyEmail"]);
  });

  const configs = program.command("configs").description("manage a project's configs");
  configs.command("create <name>").action(async (name: string, _opts, cmd: Command) => {
    const project = projectOf(cmd);
    await clientFor(cmd).request("POST", "/v3/configs", { body: { project, name } });
    print(`created config ${project}/${name}`);
  });
  configs.command("list").action(async (_opts, cmd: Command) => {
    const { configs } = await clientFor(cmd).request<{ configs: Array<Record<string, unknown>> }>("GET", "/v3/configs", { query: { project: projectOf(cmd) } });
    printTable(configs, ["name", "createdAt"]);
  });
}
