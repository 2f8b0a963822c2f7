import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { recordRevokeFailure } from "../../core/dynamic/leases.ts";
import { LEASE_DUE, leaseKey, type LeaseItem } from "../../core/dynamic/model.ts";
import type { RotationDeps } from "../../core/rotation/model.ts";
import { startTestServer, type TestServer } from "../support/embedded.ts";

// The reconciler reads the lease due index oldest first, one page (500) at a time. Leases whose
// revocation keeps failing must not stay at the head of it, or enough of them would hide every
// newer expired lease — which only the reconciler revokes after an embedded restart.
describe("lease due index under revocation failures", () => {
  let server: TestServer;
  let deps: RotationDeps;
  beforeAll(async () => {
    server = await startTestServer();
    deps = server.embedded.deps;
    server.embedded.reconciler.stop(); // these leases have no target: keep the real loop off them
  });
  afterAll(() => server?.stop());

  const putLease = async (leaseId: string, expiresAt: Date) => {
    const lease: LeaseItem = {
      ...leaseKey(leaseId),
      kind: "lease",
      leaseId,
      project: "p",
      config: "c",
      dynamic: "DYN",
      provider: "postgres",
      handle: { username: `rotor_${leaseId}` },
      state: "active",
      createdAt: new Date(expiresAt.getTime() - 60_000).toISOString(),
      expiresAt: expiresAt.toISOString(),
      maxExpiresAt: expiresAt.toISOString(),
      revokeFailures: 0,
      gsi1pk: LEASE_DUE,
      gsi1sk: `${expiresAt.toISOString()}#${leaseId}`,
    };
    await deps.table.put(lease);
  };
  const dueNow = async () => (await deps.table.queryDue<LeaseItem>(LEASE_DUE, new Date().toISOString() + "\uffff", 500)).map((l) => l.leaseId);

  it("moves a failing lease to its next attempt, so newer expired leases come first", async () => {
    const long = Date.now() - 3600_000;
    for (let i = 0; i < 3; i++) await putLease(`stuck${i}`, new Date(long + i));
    await putLease("fresh", new Date(Date.now() - 1000));
    expect(await dueNow()).toEqual(["stuck0", "stuck1", "stuck2", "fresh"]);

    for (let i = 0; i < 3; i++) {
      const { waitSeconds } = await recordRevokeFailure(deps, `stuck${i}`, { Error: "Retryable", Cause: "database unreachable" });
      expect(waitSeconds).toBeGreaterThan(0);
      const item = await deps.table.get<LeaseItem>(leaseKey(`stuck${i}`).pk, leaseKey(`stuck${i}`).sk);
      expect(item!.revokeFailures).toBe(1);
      expect(Date.parse(item!.gsi1sk!.split("#")[0]!)).toBeGreaterThan(Date.now());
      expect(item!.expiresAt).toBe(new Date(long + i).toISOString()); // the lease's own expiry is unchanged
    }
    expect(await dueNow()).toEqual(["fresh"]);
  });

  it("leaves a revoked lease out of the index", async () => {
    await putLease("gone", new Date(Date.now() - 5000));
    await deps.table.update(leaseKey("gone").pk, leaseKey("gone").sk, { expression: "SET #s = :r REMOVE gsi1pk, gsi1sk", names: { "#s": "state" }, values: { ":r": "revoked" } });
    await recordRevokeFailure(deps, "gone", { Error: "Retryable" });
    const item = await deps.table.get<LeaseItem>(leaseKey("gone").pk, leaseKey("gone").sk);
    expect(item!.gsi1pk).toBeUndefined();
    expect(item!.gsi1sk).toBeUndefined();
  });
});
