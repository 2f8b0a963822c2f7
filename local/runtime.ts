import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { Agent as HttpAgent } from "node:http";
import { createApi } from "../core/api/app.ts";
import { serveApi } from "./server.ts";
import { createToken } from "../core/auth/tokens.ts";
import type { Deps } from "../core/context.ts";
import type { RotationDeps } from "../core/rotation/model.ts";
import type { LocalStepFunctions } from "../core/adapters/local/step-functions.ts";
import type { DuePoller } from "../core/adapters/local/due-poller.ts";
import { Envelope } from "../core/crypto/envelope.ts";
import { LocalEventBus } from "../core/events.ts";
import { Table } from "../core/store/table.ts";
import { FileKeyWrapper } from "../core/adapters/local/file-key-wrapper.ts";
import { registerWebhookRoutes } from "../core/api/routes/webhooks.ts";
import { policyFromEnv } from "../core/webhooks/deliver.ts";
import { WebhookDispatcher, type DispatcherOptions } from "../core/webhooks/dispatcher.ts";
import { startDynalite } from "./dynalite.ts";
import { wireRotation, type LeaseReconciler, type RotationOptions } from "./rotation.ts";

// Rotor pins Node 20 (see DESIGN.md); the SDK warns about it on every start otherwise.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";

export interface EmbeddedOptions {
  dataDir: string;
  port: number;
  host?: string;
  /** Use this DynamoDB endpoint (e.g. DynamoDB Local) instead of an on-disk dynalite. */
  dynamoEndpoint?: string;
  log?: (line: string) => void;
  rotation?: RotationOptions;
  /** Webhook delivery; the retry policy defaults to ROTOR_WEBHOOK_* variables, then built-in values. */
  webhooks?: DispatcherOptions;
}

export interface Embedded {
  url: string;
  deps: RotationDeps;
  runner: LocalStepFunctions;
  poller: DuePoller;
  reconciler: LeaseReconciler;
  bus: LocalEventBus;
  webhooks: WebhookDispatcher;
  adminTokenPath: string;
  stop: () => Promise<void>;
}

/**
 * Embedded mode: the same core and API as the cloud, on one machine. dynalite keeps the
 * table on disk under the data dir, next to the master key and the admin token (both 0600).
 */
export async function startEmbedded(opts: EmbeddedOptions): Promise<Embedded> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const dataDir = resolve(opts.dataDir);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });

  const dynamo = opts.dynamoEndpoint ? undefined : await startDynalite({ path: join(dataDir, "dynamodb") });
  const client = new DynamoDBClient({
    endpoint: opts.dynamoEndpoint ?? dynamo!.endpoint,
    region: "local",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
    ...(dynamo
      ? { requestHandler: dynamo.requestHandler, signer: dynamo.signer }
      : // The SDK's default pool (50 sockets) queues requests when many flips or leases run at
        // once; the table is on loopback, so a wider pool costs nothing.
        { requestHandler: { httpAgent: new HttpAgent({ keepAlive: true, maxSockets: 256 }) } }),
  });
  const table = new Table(client, "rotor");
  await table.ensureExists();

  const bus = new LocalEventBus();
  const deps: Deps = {
    table,
    envelope: new Envelope(FileKeyWrapper.openOrCreate(join(dataDir, "master.key"))),
    events: bus,
    now: () => new Date(),
  };

  const adminTokenPath = join(dataDir, "admin-token");
  if (!existsSync(adminTokenPath)) {
    const { token } = await createToken(deps, "system:bootstrap", { kind: "admin" });
    writeFileSync(adminTokenPath, token + "\n", { mode: 0o600 });
    log(`Created an admin token; it is in ${adminTokenPath} (readable by you only).`);
  }

  const webhooks = new WebhookDispatcher(deps, { policy: policyFromEnv(process.env), ...opts.webhooks });
  bus.subscribe(webhooks.handle);

  const rotation = await wireRotation(deps, dataDir, opts.rotation ?? {});
  const app = createApi(rotation.deps, [...rotation.routes, registerWebhookRoutes]);
  const server = await serveApi(app, { port: opts.port, host: opts.host });
  const url = server.url;

  rotation.poller.start();
  rotation.reconciler.start();
  let stopped = false;
  return {
    url,
    deps: rotation.deps,
    runner: rotation.runner,
    poller: rotation.poller,
    reconciler: rotation.reconciler,
    bus,
    webhooks,
    adminTokenPath,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      rotation.poller.stop();
      rotation.reconciler.stop();
      await rotation.runner.stop();
      // Before the table goes: in-flight deliveries still log their (aborted) attempt.
      await webhooks.stop();
      await server.close();
      client.destroy();
      await dynamo?.stop();
    },
  };
}
