import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { RouteModule } from "../core/api/app.ts";
import { rotationRoutes } from "../core/api/routes/rotated.ts";
import { AgentClient, type AgentTransport, type TransportFactory } from "../core/agents/client.ts";
import { KeySigner } from "../core/agents/signer.ts";
import { HttpAgentTransport } from "../core/adapters/http-transport.ts";
import { LambdaAgentTransport } from "../core/adapters/aws/lambda-transport.ts";
import { DuePoller, IndexScheduler } from "../core/adapters/local/due-poller.ts";
import { Periodic } from "../core/adapters/local/periodic.ts";
import { notifierFromEnv } from "../core/adapters/local/smtp-notifier.ts";
import { LocalStepFunctions, type LocalRunnerOptions } from "../core/adapters/local/step-functions.ts";
import type { Deps } from "../core/context.ts";
import { TableExecutions } from "../core/executions.ts";
import { rotatedContributor } from "../core/rotation/manage.ts";
import { dynamicContributor, reconcileLeases } from "../core/dynamic/leases.ts";
import { dynamicRoutes } from "../core/api/routes/dynamic.ts";
import { defaultRotationSettings, type Notifier, type RotationDeps, type RotationSettings } from "../core/rotation/model.ts";
import { createAgent } from "../functions/agents/core.ts";
import { mysqlEngine } from "../functions/agents/mysql.ts";
import { postgresEngine } from "../functions/agents/postgres.ts";
import { taskFunctions } from "../functions/registry.ts";

export interface RotationOptions extends LocalRunnerOptions {
  settings?: Partial<RotationSettings>;
  pollIntervalMs?: number;
  /** How often the lease reconciler looks for expired leases nobody is revoking. */
  reconcileIntervalMs?: number;
  maxConcurrentFlips?: number;
  /** Requests each in-process agent runs against databases at once (default 16). */
  maxAgentConcurrency?: number;
  notifier?: Notifier;
}

const statemachine = (name: string) => fileURLToPath(new URL(`../statemachines/${name}.asl.json`, import.meta.url));

/**
 * Embedded rotation: the real ASL run by aws-local-stepfunctions, the same task functions
 * as the Lambdas, in-process agents verifying Rotor's own JWKS, the due-index poller.
 */
export async function wireRotation(base: Deps, dataDir: string, opts: RotationOptions) {
  const signer = await KeySigner.fromFile(join(dataDir, "signing-key.json"));
  // Bounded: hundreds of leases expiring together must not open hundreds of connections at once.
  const maxConcurrent = opts.maxAgentConcurrency ?? 16;
  const inProcess = {
    postgres: createAgent(postgresEngine, { jwks: signer.jwks() as never, maxConcurrent }),
    mysql: createAgent(mysqlEngine, { jwks: signer.jwks() as never, maxConcurrent }),
  };
  const transports: TransportFactory = (spec): AgentTransport => {
    switch (spec.transport) {
      case "local":
        return {
          send: (jws, engine) => {
            const agent = inProcess[engine as keyof typeof inProcess];
            if (!agent) throw new Error(`no in-process agent for ${engine}`);
            return agent.handle(jws);
          },
        };
      case "http":
        return new HttpAgentTransport(spec);
      case "lambda":
        return new LambdaAgentTransport(spec, { externalId: process.env.ROTOR_EXTERNAL_ID ?? "" });
    }
  };

  const executions = new TableExecutions(base);
  const tasks = Object.fromEntries(Object.entries(taskFunctions).map(([placeholder, f]) => [placeholder, f.task]));
  const runner = new LocalStepFunctions(executions, { rotate: { file: statemachine("rotate"), tasks }, lease: { file: statemachine("lease"), tasks } }, opts);
  const deps: RotationDeps = {
    ...base,
    contributors: [...(base.contributors ?? []), rotatedContributor, dynamicContributor],
    agents: new AgentClient(signer, transports),
    workflows: runner,
    scheduler: new IndexScheduler(),
    notifier: opts.notifier ?? notifierFromEnv(process.env),
    settings: { ...defaultRotationSettings, defaultNotifyEmail: process.env.ROTOR_NOTIFY_EMAIL, ...opts.settings },
  };
  runner.attach(deps);
  const poller = new DuePoller(deps, runner, { intervalMs: opts.pollIntervalMs ?? 1000, maxConcurrent: opts.maxConcurrentFlips ?? 50 });
  const jwksRoute: RouteModule = (app) => {
    app.get("/.well-known/jwks.json", (c) => c.json(signer.jwks()));
  };
  const routes: RouteModule[] = [rotationRoutes(deps, executions), dynamicRoutes(deps), jwksRoute];
  const reconciler = new LeaseReconciler(deps, runner, opts.reconcileIntervalMs ?? 1000);
  return { deps, runner, poller, reconciler, routes, signer, executions };
}

/**
 * Embedded lease reconciler: revokes expired leases whose workflow is not running in this
 * process — e.g. the process was killed while they waited — within a tick of restarting.
 */
export class LeaseReconciler extends Periodic {
  constructor(
    private readonly deps: RotationDeps,
    private readonly runner: LocalStepFunctions,
    intervalMs: number,
  ) {
    super("lease reconciler", intervalMs);
  }

  protected pass() {
    return reconcileLeases(this.deps, (leaseId) => this.runner.isRunning(leaseId));
  }
}
