import { ScanCommand } from "@aws-sdk/client-dynamodb";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rotationProviders } from "../../core/providers/index.ts";
import type { ApplyRequest, Credential, RotationProvider } from "../../core/providers/types.ts";
import { rotatedKey, saveRotated, sealBinding, type RotatedItem, type SecretRef } from "../../core/rotation/model.ts";
import { startTestServer, type TestServer } from "../support/embedded.ts";

/**
 * The provider interface must take an issuer (a target that makes the new value itself, like
 * IAM issuing an access key) without any change to the workflow. This drives the real
 * rotate.asl.json and flip steps with an issuer that rotates two "access keys" of a fake
 * target: it deletes the inactive key and creates a new one, whose id and secret only the
 * target knows until it hands them back.
 */
class KeyStore {
  readonly keys = new Map<string, string>();
  issue(): Credential {
    const username = `AKIA${randomBytes(8).toString("hex").toUpperCase()}`;
    const password = randomBytes(24).toString("base64url");
    this.keys.set(username, password);
    return { username, password };
  }
}

function keyIssuer(store: KeyStore, applied: ApplyRequest[]): RotationProvider {
  return {
    type: "test-keys",
    strategy: "issuer",
    defaultPort: 443,
    generate: () => "to-be-issued", // a placeholder: the target makes the value
    async apply(_agents, request) {
      applied.push(request);
      store.keys.delete(request.username); // the inactive instance's old key goes first
      return { outcome: "updated", issued: store.issue() };
    },
    async test(_agents, _target, credentials) {
      const bad = credentials.find((c) => store.keys.get(c.username) !== c.password);
      return bad ? { valid: false, reason: `key ${bad.username} is not valid` } : { valid: true };
    },
  };
}

describe("an issuer provider in the unchanged rotate workflow", () => {
  let server: TestServer;
  const store = new KeyStore();
  const applied: ApplyRequest[] = [];
  const ref: SecretRef = { project: "issuer", config: "prod", name: "KEYS" };
  const initial = [store.issue(), store.issue()];

  beforeAll(async () => {
    rotationProviders["test-keys"] = keyIssuer(store, applied);
    server = await startTestServer();
    const admin = { token: server.adminToken };
    expect((await server.api("POST", "/v3/projects", { ...admin, body: { name: ref.project } })).status).toBe(200);
    expect((await server.api("POST", "/v3/configs", { ...admin, body: { project: ref.project, name: ref.config } })).status).toBe(200);
    const deps = server.embedded.deps;
    const now = new Date().toISOString();
    const item: RotatedItem = {
      ...rotatedKey(ref),
      kind: "rotated",
      ...ref,
      provider: "test-keys",
      strategy: "issuer",
      connection: { host: "iam.amazonaws.com", port: 443, database: "-" },
      managingUser: { username: "integration", password: await deps.envelope.seal("integration-secret", sealBinding(ref, "managing", 1)), version: 1 },
      instances: [
        { username: initial[0]!.username, current: await deps.envelope.seal(initial[0]!.password, sealBinding(ref, 0, 1)), currentVersion: 1 },
        { username: initial[1]!.username, current: await deps.envelope.seal(initial[1]!.password, sealBinding(ref, 1, 1)), currentVersion: 1 },
      ],
      active: 0,
      schedule: { intervalDays: 30 },
      agent: { transport: "local" },
      state: "healthy",
      failureCount: 0,
      flipCount: 0,
      nextFlipAt: new Date(Date.now() + 86400_000).toISOString(),
      createdAt: now,
      rev: 0,
    };
    await saveRotated(deps, undefined, item);
  });
  afterAll(async () => {
    delete rotationProviders["test-keys"];
    await server?.stop();
  });

  const served = async () => {
    const res = await server.api("GET", "/v3/configs/config/secrets/download", { token: server.adminToken, query: { project: ref.project, config: ref.config, format: "json" } });
    expect(res.status).toBe(200);
    return { username: res.json.KEYS_USERNAME as string, password: res.json.KEYS_PASSWORD as string };
  };
  const flip = async (name: string) => {
    const { executionId } = await server.embedded.runner.start("rotate", name, { ref, force: true });
    return { executionId, status: await server.embedded.runner.wait(executionId) };
  };

  it("serves the issued key after a flip, keeps the other one, and replaced the inactive one", async () => {
    expect(await served()).toEqual(initial[0]);
    const first = await flip("issuer-flip-1");
    expect(first.status).toBe("SUCCEEDED");
    const afterFirst = await served();
    expect(afterFirst.username).not.toBe(initial[1]!.username);
    expect(store.keys.get(afterFirst.username)).toBe(afterFirst.password); // the target's own value, not the placeholder
    expect(store.keys.has(initial[0]!.username)).toBe(true); // the formerly active key stays valid
    expect(store.keys.has(initial[1]!.username)).toBe(false);
    expect(applied.at(-1)).toMatchObject({ username: initial[1]!.username, current: initial[1]!.password });

    const second = await flip("issuer-flip-2");
    expect(second.status).toBe("SUCCEEDED");
    const afterSecond = await served();
    expect(store.keys.get(afterSecond.username)).toBe(afterSecond.password);
    expect(store.keys.has(initial[0]!.username)).toBe(false);
    expect([...store.keys.keys()].sort()).toEqual([afterFirst.username, afterSecond.username].sort());
  });

  it("keeps issued secrets out of the workflow's inputs, outputs and history, and seals them in the table", async () => {
    const raw = await server.embedded.deps.table.client.send(new ScanCommand({ TableName: server.embedded.deps.table.name }));
    const text = JSON.stringify(raw.Items);
    expect(text).toContain("execution-event"); // the history was scanned too
    for (const secret of store.keys.values()) expect(text).not.toContain(secret);
  });
});
