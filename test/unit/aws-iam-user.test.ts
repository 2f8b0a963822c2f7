import {
  CreateAccessKeyCommand,
  CreateUserCommand,
  DeleteAccessKeyCommand,
  DeleteUserCommand,
  DeleteUserPolicyCommand,
  DetachUserPolicyCommand,
  IAMClient,
  ListAccessKeysCommand,
  ListAttachedUserPoliciesCommand,
  ListUserPoliciesCommand,
  PutUserPolicyCommand,
  TagUserCommand,
} from "@aws-sdk/client-iam";
import { AssumeRoleCommand, GetCallerIdentityCommand, STSClient } from "@aws-sdk/client-sts";
import { mockClient } from "aws-sdk-client-mock";
import { afterAll, beforeEach, describe, expect, it, vi } from "vitest";
import { RotorError } from "../../core/errors.ts";
import { type AwsCredentials, createAwsIamUserProvider, awsIamUserProvider, validatePolicy } from "../../core/providers/aws-iam-user.ts";
import type { AwsIntegration, DynamicContext } from "../../core/providers/dynamic-types.ts";

const iamMock = mockClient(IAMClient);
const stsMock = mockClient(STSClient);
afterAll(() => {
  iamMock.restore();
  stsMock.restore();
});

const ACCOUNT = "111122223333";
const INTEGRATION_SECRET = "integration-SECRET-wJalrXUtnFEMI-K7MDENG";
const TEMP_SECRET = "assumed-SECRET-bPxRfiCYEXAMPLEKEY";
const TEMP_TOKEN = "assumed-SESSION-TOKEN-FwoGZXIvYXdzEXAMPLE";
const accessKeyIntegration = { type: "accessKey", accessKeyId: "AKIAINTEGRATION00001", secretAccessKey: INTEGRATION_SECRET } satisfies AwsIntegration;
const roleIntegration: AwsIntegration = {
  type: "assumeRole",
  roleArn: `arn:aws:iam::${ACCOUNT}:role/RotorIntegration`,
  externalId: "rotor-ext-7f3a",
  region: "eu-west-1",
};
const POLICY = JSON.stringify({
  Version: "2012-10-17",
  Statement: [{ Effect: "Allow", Action: ["s3:GetObject"], Resource: "arn:aws:s3:::app-bucket/*" }],
});
const ctxFor = (integration: AwsIntegration = accessKeyIntegration, policy = POLICY): DynamicContext => ({
  agents: {} as DynamicContext["agents"],
  recipe: { provider: "aws-iam-user", integration, policy },
  now: () => new Date("2030-01-01T00:00:00.000Z"),
});
const LEASE_ID = "lease_01J0000000000000000000";
const EXPIRES = new Date("2030-01-01T00:30:00.000Z");

// ---------------------------------------------------------------------------------------
// A small stateful fake of IAM and STS on top of aws-sdk-client-mock: every call is logged
// (for call order), state answers the List* calls, and `fail` injects errors per command.

const awsError = (name: string, status: number, message = `${name} (fake)`) =>
  Object.assign(new Error(message), { name, $fault: status >= 500 ? "server" : "client", $metadata: { httpStatusCode: status } });
const noSuchEntity = () => awsError("NoSuchEntityException", 404, "The user with name X cannot be found.");
const throttling = () => awsError("Throttling", 400, "Rate exceeded");
const invalidToken = () => awsError("InvalidClientTokenId", 403, "The security token included in the request is invalid.");

interface FakeUser {
  path: string;
  userId: string;
  arn: string;
  tags: { Key: string; Value: string }[];
  keys: { id: string; secret: string }[];
  policies: Map<string, string>;
  attached: string[];
}

let users: Map<string, FakeUser>;
let log: string[];
/** Per command name: errors to throw, one per call (undefined = behave normally), or a function of the call number. */
let fail: Record<string, (n: number) => Error | undefined>;
/** How many GetCallerIdentity calls with a new key fail (InvalidClientTokenId) before it works. */
let keyFailures: number;
let pageSize: number;
let counter: number;
const calls: Record<string, number> = {};

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const fakeId = (prefix: string) => {
  counter++;
  let s = prefix;
  for (let i = 0, n = counter * 7919; i < 16; i++, n = Math.floor(n / 3) + i * 13) s += ALNUM[n % ALNUM.length];
  return s;
};

function page<T>(all: T[], marker: string | undefined) {
  const start = marker ? Number(marker.slice("page-".length)) : 0;
  const items = all.slice(start, start + pageSize);
  const next = start + pageSize;
  return next < all.length ? { items, IsTruncated: true, Marker: `page-${next}` } : { items, IsTruncated: false };
}

function user(name: string): FakeUser {
  const u = users.get(name);
  if (!u) throw noSuchEntity();
  return u;
}

async function credentialsOf(getClient: () => { config: { credentials?: unknown } }): Promise<AwsCredentials> {
  const c = getClient().config.credentials;
  return (typeof c === "function" ? await c() : c) as AwsCredentials;
}

function handler<T>(name: string, fn: (input: any, getClient: () => any) => T | Promise<T>) {
  return async (input: any, getClient: () => any) => {
    log.push(name);
    calls[name] = (calls[name] ?? 0) + 1;
    const err = fail[name]?.(calls[name]);
    if (err) throw err;
    return fn(input, getClient);
  };
}

function installFake() {
  iamMock.reset();
  stsMock.reset();
  users = new Map();
  log = [];
  fail = {};
  keyFailures = 0;
  pageSize = 100;
  counter = 0;
  for (const k of Object.keys(calls)) delete calls[k];

  iamMock.on(CreateUserCommand).callsFake(
    handler("CreateUser", (i) => {
      if (users.has(i.UserName)) throw awsError("EntityAlreadyExistsException", 409);
      const u: FakeUser = {
        path: i.Path,
        userId: fakeId("AIDA"),
        arn: `arn:aws:iam::${ACCOUNT}:user${i.Path}${i.UserName}`,
        tags: i.Tags ?? [],
        keys: [],
        policies: new Map(),
        attached: [],
      };
      users.set(i.UserName, u);
      return { User: { UserName: i.UserName, Path: i.Path, UserId: u.userId, Arn: u.arn, CreateDate: new Date(), Tags: u.tags } };
    }),
  );
  iamMock.on(PutUserPolicyCommand).callsFake(
    handler("PutUserPolicy", (i) => {
      user(i.UserName).policies.set(i.PolicyName, i.PolicyDocument);
      return {};
    }),
  );
  iamMock.on(CreateAccessKeyCommand).callsFake(
    handler("CreateAccessKey", (i) => {
      const key = { id: fakeId("AKIA"), secret: `new-SECRET-${counter}-wJalrXUtnFEMIK7MDENGbPxRfiCY` };
      user(i.UserName).keys.push(key);
      return { AccessKey: { UserName: i.UserName, AccessKeyId: key.id, SecretAccessKey: key.secret, Status: "Active", CreateDate: new Date() } };
    }),
  );
  iamMock.on(TagUserCommand).callsFake(
    handler("TagUser", (i) => {
      const u = user(i.UserName);
      for (const t of i.Tags) u.tags = [...u.tags.filter((x) => x.Key !== t.Key), t];
      return {};
    }),
  );
  iamMock.on(ListAccessKeysCommand).callsFake(
    handler("ListAccessKeys", (i) => {
      const p = page(user(i.UserName).keys, i.Marker);
      return { AccessKeyMetadata: p.items.map((k) => ({ UserName: i.UserName, AccessKeyId: k.id, Status: "Active" })), IsTruncated: p.IsTruncated, Marker: p.Marker };
    }),
  );
  iamMock.on(DeleteAccessKeyCommand).callsFake(
    handler("DeleteAccessKey", (i) => {
      const u = user(i.UserName);
      if (!u.keys.some((k) => k.id === i.AccessKeyId)) throw noSuchEntity();
      u.keys = u.keys.filter((k) => k.id !== i.AccessKeyId);
      return {};
    }),
  );
  iamMock.on(ListUserPoliciesCommand).callsFake(
    handler("ListUserPolicies", (i) => {
      const p = page([...user(i.UserName).policies.keys()], i.Marker);
      return { PolicyNames: p.items, IsTruncated: p.IsTruncated, Marker: p.Marker };
    }),
  );
  iamMock.on(DeleteUserPolicyCommand).callsFake(
    handler("DeleteUserPolicy", (i) => {
      if (!user(i.UserName).policies.delete(i.PolicyName)) throw noSuchEntity();
      return {};
    }),
  );
  iamMock.on(ListAttachedUserPoliciesCommand).callsFake(
    handler("ListAttachedUserPolicies", (i) => {
      const p = page(user(i.UserName).attached, i.Marker);
      return { AttachedPolicies: p.items.map((arn) => ({ PolicyArn: arn, PolicyName: arn.split("/").pop() })), IsTruncated: p.IsTruncated, Marker: p.Marker };
    }),
  );
  iamMock.on(DetachUserPolicyCommand).callsFake(
    handler("DetachUserPolicy", (i) => {
      const u = user(i.UserName);
      if (!u.attached.includes(i.PolicyArn)) throw noSuchEntity();
      u.attached = u.attached.filter((a) => a !== i.PolicyArn);
      return {};
    }),
  );
  iamMock.on(DeleteUserCommand).callsFake(
    handler("DeleteUser", (i) => {
      const u = user(i.UserName);
      if (u.keys.length || u.policies.size || u.attached.length) throw awsError("DeleteConflictException", 409, "Cannot delete entity, must delete policies first.");
      users.delete(i.UserName);
      return {};
    }),
  );

  stsMock.on(AssumeRoleCommand).callsFake(
    handler("AssumeRole", () => ({
      Credentials: { AccessKeyId: "ASIATEMPORARY0000001", SecretAccessKey: TEMP_SECRET, SessionToken: TEMP_TOKEN, Expiration: new Date(Date.now() + 900_000) },
      AssumedRoleUser: { Arn: `arn:aws:sts::${ACCOUNT}:assumed-role/RotorIntegration/rotor-dynamic`, AssumedRoleId: "AROA:rotor-dynamic" },
    })),
  );
  let newKeyCalls = 0;
  stsMock.on(GetCallerIdentityCommand).callsFake(
    handler("GetCallerIdentity", async (_i, getClient) => {
      const c = await credentialsOf(getClient);
      if (c.accessKeyId === accessKeyIntegration.accessKeyId) return { Account: ACCOUNT, Arn: `arn:aws:iam::${ACCOUNT}:user/rotor-integration`, UserId: "AIDAINTEGRATION" };
      if (c.accessKeyId.startsWith("ASIA")) return { Account: ACCOUNT, Arn: `arn:aws:sts::${ACCOUNT}:assumed-role/RotorIntegration/rotor-dynamic`, UserId: "AROA:rotor-dynamic" };
      for (const [name, u] of users)
        if (u.keys.some((k) => k.id === c.accessKeyId && k.secret === c.secretAccessKey)) {
          if (newKeyCalls++ < keyFailures) throw invalidToken();
          return { Account: ACCOUNT, Arn: u.arn, UserId: u.userId, name };
        }
      throw invalidToken();
    }),
  );
}

/** Which credentials and region each client was built with, in order. */
let built: { service: "iam" | "sts"; credentials: AwsCredentials | undefined; region: string }[];
let sleeps: number[];
const provider = (extra: { usableWithinMs?: number } = {}) =>
  createAwsIamUserProvider({
    iam: (credentials, region) => {
      built.push({ service: "iam", credentials, region });
      return new IAMClient({ region, credentials });
    },
    sts: (credentials, region) => {
      built.push({ service: "sts", credentials, region });
      return new STSClient({ region, ...(credentials ? { credentials } : { credentials: { accessKeyId: "AKIDAMBIENT", secretAccessKey: "ambient" } }) });
    },
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    ...extra,
  });

const inputs = (m: typeof iamMock | typeof stsMock, C: any) => m.commandCalls(C).map((c) => c.args[0].input);
const NAME = /^Rotor-Dynamic-[a-z0-9]{20}$/;

beforeEach(() => {
  installFake();
  built = [];
  sleeps = [];
});

async function rejection(p: Promise<unknown>): Promise<RotorError> {
  const e = await p.then(
    () => {
      throw new Error("expected a rejection");
    },
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(RotorError);
  return e as RotorError;
}

/** Every secret of the fixtures and every secret key the fake issued. */
const allSecrets = () => [INTEGRATION_SECRET, TEMP_SECRET, TEMP_TOKEN, ...[...users.values()].flatMap((u) => u.keys.map((k) => k.secret)), ...issuedSecrets];
let issuedSecrets: string[] = [];
function expectNoSecrets(e: unknown) {
  const text = `${(e as Error).message}\n${JSON.stringify(e)}\n${String(e)}`;
  for (const s of allSecrets()) expect(text).not.toContain(s);
}

async function issue(p = provider(), ctx = ctxFor()) {
  const handle = p.newHandle();
  return { handle, out: await p.issue(ctx, { leaseId: LEASE_ID, expiresAt: EXPIRES, handle }) };
}

/** Issues through the fake but remembers the key's secret (the fake's state is gone after cleanup). */
function rememberSecrets() {
  issuedSecrets = [];
  iamMock.on(CreateAccessKeyCommand).callsFake(
    handler("CreateAccessKey", (i) => {
      const key = { id: fakeId("AKIA"), secret: `new-SECRET-${counter}-wJalrXUtnFEMIK7MDENGbPxRfiCY` };
      issuedSecrets.push(key.secret);
      user(i.UserName).keys.push(key);
      return { AccessKey: { UserName: i.UserName, AccessKeyId: key.id, SecretAccessKey: key.secret, Status: "Active", CreateDate: new Date() } };
    }),
  );
}

// ---------------------------------------------------------------------------------------

describe("aws-iam-user: handle and policy", () => {
  it("is registered as type aws-iam-user and names users Rotor-Dynamic-<20 base36>, unique, within IAM's 64 chars", () => {
    expect(awsIamUserProvider.type).toBe("aws-iam-user");
    const names = new Set(Array.from({ length: 200 }, () => awsIamUserProvider.newHandle().userName));
    expect(names.size).toBe(200);
    for (const n of names) {
      expect(n).toMatch(NAME);
      expect(n).toMatch(/^[\w+=,.@-]{1,64}$/);
    }
  });

  it.each([
    ["not JSON", "{Statement: []", /not valid JSON/],
    ["an array", "[]", /must be a JSON object/],
    ["no Statement", JSON.stringify({ Version: "2012-10-17" }), /has no Statement/],
    ["an empty Statement", JSON.stringify({ Statement: [] }), /Statement is empty/],
    ["a string Statement", JSON.stringify({ Statement: "Allow" }), /must be a JSON object/],
    ["an empty document", "  ", /empty/],
    ["too large", JSON.stringify({ Statement: [{ Effect: "Allow", Action: "s3:GetObject", Resource: "x".repeat(2100) }] }), /IAM allows 2048/],
  ])("refuses a policy that is %s with invalid_request and makes no AWS call", async (_what, policy, message) => {
    const e = await rejection(provider().check(ctxFor(accessKeyIntegration, policy)));
    expect(e).toMatchObject({ code: "invalid_request", status: 400, retryable: false });
    expect(e.message).toMatch(message);
    await rejection(provider().issue(ctxFor(accessKeyIntegration, policy), { leaseId: LEASE_ID, expiresAt: EXPIRES, handle: { userName: "Rotor-Dynamic-x" } }));
    expect(log).toEqual([]);
  });

  it("accepts a Statement given as one object", () => {
    expect(() => validatePolicy(JSON.stringify({ Statement: { Effect: "Allow", Action: "sts:GetCallerIdentity", Resource: "*" } }))).not.toThrow();
  });
});

describe("aws-iam-user: check", () => {
  it("access key integration: one GetCallerIdentity with the integration's key in us-east-1, nothing created", async () => {
    await provider().check(ctxFor(accessKeyIntegration));
    expect(log).toEqual(["GetCallerIdentity"]);
    expect(inputs(stsMock, GetCallerIdentityCommand)).toEqual([{}]);
    expect(built).toHaveLength(1);
    expect(built[0]).toMatchObject({ service: "sts", region: "us-east-1", credentials: { accessKeyId: "AKIAINTEGRATION00001", secretAccessKey: INTEGRATION_SECRET } });
    expect(built[0].credentials?.sessionToken).toBeUndefined();
    expect(iamMock.calls()).toHaveLength(0);
  });

  it("role integration: AssumeRole with ExternalId (Rotor's own credentials), then GetCallerIdentity with the temporary ones", async () => {
    await provider().check(ctxFor(roleIntegration));
    expect(log).toEqual(["AssumeRole", "GetCallerIdentity"]);
    expect(inputs(stsMock, AssumeRoleCommand)).toEqual([
      { RoleArn: `arn:aws:iam::${ACCOUNT}:role/RotorIntegration`, RoleSessionName: "rotor-dynamic", ExternalId: "rotor-ext-7f3a", DurationSeconds: 900 },
    ]);
    expect(built[0]).toEqual({ service: "sts", region: "eu-west-1", credentials: undefined });
    expect(built[1]).toMatchObject({ service: "sts", region: "eu-west-1", credentials: { accessKeyId: "ASIATEMPORARY0000001", secretAccessKey: TEMP_SECRET, sessionToken: TEMP_TOKEN } });
    expect(iamMock.calls()).toHaveLength(0);
  });

  it("check assumes the role afresh each time (no cached credentials)", async () => {
    const p = provider();
    await p.check(ctxFor(roleIntegration));
    await p.check(ctxFor(roleIntegration));
    expect(stsMock.commandCalls(AssumeRoleCommand)).toHaveLength(2);
  });

  it("a key AWS refuses: 422 integration_invalid, not retryable, with a clear message and no secret", async () => {
    fail.GetCallerIdentity = () => invalidToken();
    const e = await rejection(provider().check(ctxFor(accessKeyIntegration)));
    expect(e).toMatchObject({ code: "integration_invalid", status: 422, retryable: false });
    expect(e.message).toMatch(/AWS integration does not work.*GetCallerIdentity.*AKIAINTEGRATION00001.*InvalidClientTokenId/);
    expectNoSecrets(e);
  });

  it("a role that cannot be assumed: 422 naming the role", async () => {
    fail.AssumeRole = () => awsError("AccessDenied", 403, "User is not authorized to perform: sts:AssumeRole");
    const e = await rejection(provider().check(ctxFor(roleIntegration)));
    expect(e).toMatchObject({ code: "integration_invalid", status: 422, retryable: false });
    expect(e.message).toContain("RotorIntegration");
    expect(e.message).toContain("AccessDenied");
    expect(log).toEqual(["AssumeRole"]);
  });

  it("throttling or a 5xx during check: 503 retryable", async () => {
    fail.AssumeRole = () => throttling();
    expect(await rejection(provider().check(ctxFor(roleIntegration)))).toMatchObject({ code: "unavailable", status: 503, retryable: true });
    installFake();
    fail.GetCallerIdentity = () => awsError("InternalFailure", 500);
    expect(await rejection(provider().check(ctxFor(accessKeyIntegration)))).toMatchObject({ status: 503, retryable: true });
  });
});

describe("aws-iam-user: issue", () => {
  it("CreateUser (path /rotor/, lease tags), PutUserPolicy, CreateAccessKey, then GetCallerIdentity with the NEW key", async () => {
    const { handle, out } = await issue();
    expect(log).toEqual(["CreateUser", "PutUserPolicy", "CreateAccessKey", "GetCallerIdentity"]);
    const name = handle.userName;
    expect(name).toMatch(NAME);
    expect(inputs(iamMock, CreateUserCommand)).toEqual([
      {
        UserName: name,
        Path: "/rotor/",
        Tags: [
          { Key: "rotor:lease-id", Value: LEASE_ID },
          { Key: "rotor:expires-at", Value: "2030-01-01T00:30:00.000Z" },
        ],
      },
    ]);
    expect(inputs(iamMock, PutUserPolicyCommand)).toEqual([{ UserName: name, PolicyName: "rotor-lease-policy", PolicyDocument: POLICY }]);
    expect(inputs(iamMock, CreateAccessKeyCommand)).toEqual([{ UserName: name }]);
    expect(inputs(stsMock, GetCallerIdentityCommand)).toEqual([{}]);
    expect(iamMock.calls()).toHaveLength(3);

    // The IAM client used the integration's key; the wait used the new key (no session token).
    expect(built[0]).toMatchObject({ service: "iam", region: "us-east-1", credentials: { accessKeyId: "AKIAINTEGRATION00001", secretAccessKey: INTEGRATION_SECRET } });
    expect(built[1].credentials?.sessionToken).toBeUndefined();
    expect(built[1]).toMatchObject({ service: "sts", region: "us-east-1", credentials: { accessKeyId: out.values.ACCESS_KEY_ID, secretAccessKey: out.values.SECRET_ACCESS_KEY } });

    const u = users.get(name)!;
    expect(Object.keys(out.values).sort()).toEqual(["ACCESS_KEY_ID", "ARN", "POLICY_NAME", "SECRET_ACCESS_KEY", "USERNAME", "USER_ID"]);
    expect(out.values).toEqual({
      ACCESS_KEY_ID: u.keys[0].id,
      SECRET_ACCESS_KEY: u.keys[0].secret,
      ARN: `arn:aws:iam::${ACCOUNT}:user/rotor/${name}`,
      USERNAME: name,
      USER_ID: u.userId,
      POLICY_NAME: "rotor-lease-policy",
    });
    expect(out.values.ACCESS_KEY_ID).toMatch(/^AKIA[A-Z0-9]{16}$/);
    expect(out.values.ARN).toMatch(/^arn:aws:iam::\d{12}:user\/rotor\/Rotor-Dynamic-[a-z0-9]{20}$/);
    expect(out.values.USER_ID).toMatch(/^AIDA[A-Z0-9]{16}$/);
    expect(out.handle).toEqual({ userName: name, accessKeyId: u.keys[0].id, arn: out.values.ARN });
    expect(JSON.stringify(out.handle)).not.toContain(u.keys[0].secret);
    expect(sleeps).toEqual([]);
  });

  it("with a role integration: AssumeRole once, IAM calls with the temporary credentials in the integration's region", async () => {
    const { out } = await issue(provider(), ctxFor(roleIntegration));
    expect(log).toEqual(["AssumeRole", "CreateUser", "PutUserPolicy", "CreateAccessKey", "GetCallerIdentity"]);
    expect(inputs(stsMock, AssumeRoleCommand)[0]).toEqual({
      RoleArn: roleIntegration.type === "assumeRole" ? roleIntegration.roleArn : "",
      RoleSessionName: "rotor-dynamic",
      ExternalId: "rotor-ext-7f3a",
      DurationSeconds: 900,
    });
    expect(built.find((b) => b.service === "iam")).toMatchObject({ region: "eu-west-1", credentials: { accessKeyId: "ASIATEMPORARY0000001", sessionToken: TEMP_TOKEN } });
    expect(out.values.ARN).toContain(":user/rotor/");
  });

  it("reuses the assumed role's credentials across operations until shortly before they expire", async () => {
    const p = provider();
    const { out } = await issue(p, ctxFor(roleIntegration));
    await p.revoke(ctxFor(roleIntegration), out.handle);
    expect(stsMock.commandCalls(AssumeRoleCommand)).toHaveLength(1);
  });

  it("waits until the new key works: GetCallerIdentity fails 3 times (InvalidClientTokenId), backing off 250, 500, 1000 ms", async () => {
    keyFailures = 3;
    const { out } = await issue();
    expect(stsMock.commandCalls(GetCallerIdentityCommand)).toHaveLength(4);
    expect(sleeps).toEqual([250, 500, 1000]);
    expect(log).toEqual(["CreateUser", "PutUserPolicy", "CreateAccessKey", "GetCallerIdentity", "GetCallerIdentity", "GetCallerIdentity", "GetCallerIdentity"]);
    expect(users.get(out.handle.userName)!.keys).toHaveLength(1);
  });

  it("a key that never works: waits within the 20 s bound (backoff capped at 2 s), then deletes everything it created and fails retryable", async () => {
    rememberSecrets();
    keyFailures = Infinity;
    const p = provider();
    const handle = p.newHandle();
    const e = await rejection(p.issue(ctxFor(), { leaseId: LEASE_ID, expiresAt: EXPIRES, handle }));
    expect(sleeps.reduce((a, b) => a + b, 0)).toBe(20_000);
    expect(sleeps.slice(0, 5)).toEqual([250, 500, 1000, 2000, 2000]);
    expect(Math.max(...sleeps)).toBe(2000);
    expect(stsMock.commandCalls(GetCallerIdentityCommand)).toHaveLength(sleeps.length + 1);
    expect(e).toMatchObject({ code: "unavailable", status: 503, retryable: true });
    expect(e.message).toContain(handle.userName);
    expect(e.message).toMatch(/did not work within 20000 ms.*InvalidClientTokenId.*the user was deleted/);
    // Cleanup: exactly the key, the inline policy and the user created above.
    const keyId = inputs(iamMock, DeleteAccessKeyCommand);
    expect(keyId).toEqual([{ UserName: handle.userName, AccessKeyId: expect.stringMatching(/^AKIA/) }]);
    expect(inputs(iamMock, DeleteUserPolicyCommand)).toEqual([{ UserName: handle.userName, PolicyName: "rotor-lease-policy" }]);
    expect(inputs(iamMock, DeleteUserCommand)).toEqual([{ UserName: handle.userName }]);
    expect(iamMock.commandCalls(DetachUserPolicyCommand)).toHaveLength(0);
    expect(users.size).toBe(0);
    expectNoSecrets(e);
  });

  it("honours usableWithinMs", async () => {
    keyFailures = Infinity;
    await rejection(issue(provider({ usableWithinMs: 1_000 })));
    expect(sleeps).toEqual([250, 500, 250]);
    expect(users.size).toBe(0);
  });

  it("uses the handle persisted with the lease (newHandle) and keeps its fields", async () => {
    const p = provider();
    const out = await p.issue(ctxFor(), { leaseId: LEASE_ID, expiresAt: EXPIRES, handle: { userName: "Rotor-Dynamic-abc123", extra: "kept" } });
    expect(inputs(iamMock, CreateUserCommand)[0]).toMatchObject({ UserName: "Rotor-Dynamic-abc123" });
    expect(out.handle).toMatchObject({ userName: "Rotor-Dynamic-abc123", extra: "kept", arn: `arn:aws:iam::${ACCOUNT}:user/rotor/Rotor-Dynamic-abc123` });
  });
});

describe("aws-iam-user: a failure after CreateUser never leaks the user", () => {
  const cleanupLog = ["ListAccessKeys", "ListUserPolicies", "ListAttachedUserPolicies", "DeleteUser"];

  it("PutUserPolicy fails (malformed policy): deletes the bare user, no key created, 422 not retryable", async () => {
    fail.PutUserPolicy = () => awsError("MalformedPolicyDocumentException", 400, "Policy document should not specify a principal.");
    const p = provider();
    const handle = p.newHandle();
    const e = await rejection(p.issue(ctxFor(), { leaseId: LEASE_ID, expiresAt: EXPIRES, handle }));
    expect(log).toEqual(["CreateUser", "PutUserPolicy", ...cleanupLog]);
    expect(inputs(iamMock, ListAccessKeysCommand)).toEqual([{ UserName: handle.userName }]);
    expect(inputs(iamMock, ListUserPoliciesCommand)).toEqual([{ UserName: handle.userName }]);
    expect(inputs(iamMock, ListAttachedUserPoliciesCommand)).toEqual([{ UserName: handle.userName }]);
    expect(inputs(iamMock, DeleteUserCommand)).toEqual([{ UserName: handle.userName }]);
    expect(users.size).toBe(0);
    expect(e).toMatchObject({ code: "policy_invalid", status: 422, retryable: false });
    expect(e.message).toMatch(/failed at PutUserPolicy.*MalformedPolicyDocument.*the user was deleted/);
    expectNoSecrets(e);
  });

  it("PutUserPolicy throttled: cleanup, then a retryable error", async () => {
    fail.PutUserPolicy = () => throttling();
    const e = await rejection(issue());
    expect(e).toMatchObject({ code: "unavailable", status: 503, retryable: true });
    expect(users.size).toBe(0);
  });

  it("CreateAccessKey fails: deletes the inline policy and the user, nothing else", async () => {
    fail.CreateAccessKey = () => awsError("LimitExceededException", 409, "Cannot exceed quota for AccessKeysPerUser: 2");
    const p = provider();
    const handle = p.newHandle();
    const e = await rejection(p.issue(ctxFor(), { leaseId: LEASE_ID, expiresAt: EXPIRES, handle }));
    expect(log).toEqual(["CreateUser", "PutUserPolicy", "CreateAccessKey", "ListAccessKeys", "ListUserPolicies", "DeleteUserPolicy", "ListAttachedUserPolicies", "DeleteUser"]);
    expect(inputs(iamMock, DeleteUserPolicyCommand)).toEqual([{ UserName: handle.userName, PolicyName: "rotor-lease-policy" }]);
    expect(iamMock.commandCalls(DeleteAccessKeyCommand)).toHaveLength(0);
    expect(inputs(iamMock, DeleteUserCommand)).toEqual([{ UserName: handle.userName }]);
    expect(users.size).toBe(0);
    expect(e).toMatchObject({ code: "aws_error", status: 502, retryable: false });
    expect(e.message).toContain("failed at CreateAccessKey");
    expect(stsMock.commandCalls(GetCallerIdentityCommand)).toHaveLength(0);
  });

  it("CreateAccessKey answers 5xx: still cleans up, and the error is retryable", async () => {
    fail.CreateAccessKey = () => awsError("ServiceFailureException", 500);
    const e = await rejection(issue());
    expect(e).toMatchObject({ status: 503, retryable: true });
    expect(users.size).toBe(0);
  });

  it("CreateUser refused (AccessDenied): nothing was created, nothing is deleted", async () => {
    fail.CreateUser = () => awsError("AccessDenied", 403, "not authorized to perform: iam:CreateUser");
    const e = await rejection(issue());
    expect(log).toEqual(["CreateUser"]);
    expect(e).toMatchObject({ code: "aws_error", status: 502, retryable: false });
  });

  it("CreateUser times out after IAM created the user: the user is cleaned up anyway", async () => {
    iamMock.on(CreateUserCommand).callsFakeOnce(async (input: any) => {
      log.push("CreateUser");
      users.set(input.UserName, { path: "/rotor/", userId: "AIDAX", arn: "arn", tags: [], keys: [], policies: new Map(), attached: [] });
      throw Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
    });
    const e = await rejection(issue());
    expect(e).toMatchObject({ retryable: true });
    expect(log).toEqual(["CreateUser", ...cleanupLog]);
    expect(users.size).toBe(0);
  });

  it("cleanup retries a throttled step", async () => {
    fail.CreateAccessKey = () => awsError("LimitExceededException", 409);
    fail.DeleteUser = (n) => (n === 1 ? throttling() : undefined);
    await rejection(issue());
    expect(iamMock.commandCalls(DeleteUserCommand)).toHaveLength(2);
    expect(users.size).toBe(0);
  });

  it("cleanup that fails too: the error names the user so an operator can find it, and carries no secret", async () => {
    rememberSecrets();
    keyFailures = Infinity;
    fail.DeleteUser = () => awsError("AccessDenied", 403, "not authorized to perform: iam:DeleteUser");
    const p = provider();
    const handle = p.newHandle();
    const e = await rejection(p.issue(ctxFor(), { leaseId: LEASE_ID, expiresAt: EXPIRES, handle }));
    expect(e.message).toContain(`IAM user ${handle.userName} (path /rotor/) may be left behind`);
    expect(e.message).toMatch(/cleanup failed too.*AccessDenied/);
    expect(e.retryable).toBe(true);
    expectNoSecrets(e);
  });
});

describe("aws-iam-user: revoke", () => {
  function seed(name: string, keys: number, policies: number, attached: number) {
    users.set(name, {
      path: "/rotor/",
      userId: "AIDASEEDED",
      arn: `arn:aws:iam::${ACCOUNT}:user/rotor/${name}`,
      tags: [],
      keys: Array.from({ length: keys }, (_, i) => ({ id: `AKIASEEDEDKEY0000${String(i).padStart(3, "0")}`, secret: `seeded-secret-${i}` })),
      policies: new Map(Array.from({ length: policies }, (_, i) => [`policy-${i}`, POLICY])),
      attached: Array.from({ length: attached }, (_, i) => `arn:aws:iam::aws:policy/Managed${i}`),
    });
  }
  const NAME1 = "Rotor-Dynamic-revoke0000000000000001";

  it("lists and deletes keys, inline policies, attached policies, then the user: revoked", async () => {
    seed(NAME1, 2, 2, 1);
    expect(await provider().revoke(ctxFor(), { userName: NAME1, accessKeyId: "ignored", arn: "x" })).toBe("revoked");
    expect(log).toEqual([
      "ListAccessKeys",
      "DeleteAccessKey",
      "DeleteAccessKey",
      "ListUserPolicies",
      "DeleteUserPolicy",
      "DeleteUserPolicy",
      "ListAttachedUserPolicies",
      "DetachUserPolicy",
      "DeleteUser",
    ]);
    expect(inputs(iamMock, ListAccessKeysCommand)).toEqual([{ UserName: NAME1 }]);
    expect(inputs(iamMock, DeleteAccessKeyCommand)).toEqual([
      { UserName: NAME1, AccessKeyId: "AKIASEEDEDKEY0000000" },
      { UserName: NAME1, AccessKeyId: "AKIASEEDEDKEY0000001" },
    ]);
    expect(inputs(iamMock, DeleteUserPolicyCommand)).toEqual([
      { UserName: NAME1, PolicyName: "policy-0" },
      { UserName: NAME1, PolicyName: "policy-1" },
    ]);
    expect(inputs(iamMock, DetachUserPolicyCommand)).toEqual([{ UserName: NAME1, PolicyArn: "arn:aws:iam::aws:policy/Managed0" }]);
    expect(inputs(iamMock, DeleteUserCommand)).toEqual([{ UserName: NAME1 }]);
    expect(users.size).toBe(0);
  });

  it("revokes what issue created", async () => {
    const p = provider();
    const { out } = await issue(p);
    log.length = 0;
    expect(await p.revoke(ctxFor(), out.handle)).toBe("revoked");
    expect(log).toEqual(["ListAccessKeys", "DeleteAccessKey", "ListUserPolicies", "DeleteUserPolicy", "ListAttachedUserPolicies", "DeleteUser"]);
    expect(inputs(iamMock, DeleteAccessKeyCommand)).toEqual([{ UserName: out.handle.userName, AccessKeyId: out.values.ACCESS_KEY_ID }]);
    expect(users.size).toBe(0);
  });

  it("follows every page (Marker) of each listing", async () => {
    pageSize = 2;
    seed(NAME1, 3, 5, 3);
    expect(await provider().revoke(ctxFor(), { userName: NAME1 })).toBe("revoked");
    expect(inputs(iamMock, ListAccessKeysCommand)).toEqual([{ UserName: NAME1 }, { UserName: NAME1, Marker: "page-2" }]);
    expect(inputs(iamMock, ListUserPoliciesCommand)).toEqual([{ UserName: NAME1 }, { UserName: NAME1, Marker: "page-2" }, { UserName: NAME1, Marker: "page-4" }]);
    expect(inputs(iamMock, ListAttachedUserPoliciesCommand)).toEqual([{ UserName: NAME1 }, { UserName: NAME1, Marker: "page-2" }]);
    expect(iamMock.commandCalls(DeleteAccessKeyCommand)).toHaveLength(3);
    expect(iamMock.commandCalls(DeleteUserPolicyCommand)).toHaveLength(5);
    expect(iamMock.commandCalls(DetachUserPolicyCommand)).toHaveLength(3);
    expect(users.size).toBe(0);
  });

  it("a user already gone (NoSuchEntity on ListAccessKeys): already_gone, nothing else called", async () => {
    expect(await provider().revoke(ctxFor(), { userName: NAME1 })).toBe("already_gone");
    expect(log).toEqual(["ListAccessKeys"]);
  });

  it.each(["DeleteAccessKey", "ListUserPolicies", "DeleteUserPolicy", "ListAttachedUserPolicies", "DetachUserPolicy", "DeleteUser"])(
    "NoSuchEntity on %s means that part is already gone: revoked",
    async (step) => {
      seed(NAME1, 1, 1, 1);
      fail[step] = (n) => (n === 1 ? noSuchEntity() : undefined);
      // Make the fake consistent with "that part is already gone".
      const u = users.get(NAME1)!;
      if (step === "DeleteAccessKey") fail[step] = (n) => (n === 1 ? ((u.keys = []), noSuchEntity()) : undefined);
      if (step === "DeleteUserPolicy") fail[step] = (n) => (n === 1 ? (u.policies.clear(), noSuchEntity()) : undefined);
      if (step === "DetachUserPolicy") fail[step] = (n) => (n === 1 ? ((u.attached = []), noSuchEntity()) : undefined);
      if (step === "ListUserPolicies") fail[step] = (n) => (n === 1 ? (u.policies.clear(), noSuchEntity()) : undefined);
      if (step === "ListAttachedUserPolicies") fail[step] = (n) => (n === 1 ? ((u.attached = []), noSuchEntity()) : undefined);
      if (step === "DeleteUser") fail[step] = (n) => (n === 1 ? (users.delete(NAME1), noSuchEntity()) : undefined);
      expect(await provider().revoke(ctxFor(), { userName: NAME1 })).toBe("revoked");
      expect(log.at(-1)).toBe(step === "DeleteUser" ? "DeleteUser" : "DeleteUser");
      expect(iamMock.commandCalls(DeleteUserCommand)).toHaveLength(1);
      expect(users.size).toBe(0);
    },
  );

  it("DeleteUser conflict while IAM still sees a deleted key: lists again and deletes", async () => {
    seed(NAME1, 1, 0, 0);
    fail.DeleteUser = (n) => (n === 1 ? awsError("DeleteConflictException", 409) : undefined);
    expect(await provider().revoke(ctxFor(), { userName: NAME1 })).toBe("revoked");
    expect(iamMock.commandCalls(DeleteUserCommand)).toHaveLength(2);
    expect(iamMock.commandCalls(ListAccessKeysCommand)).toHaveLength(2);
    expect(sleeps).toEqual([250]);
  });

  it("a lasting DeleteUser conflict (something Rotor did not create): 409, retryable, names the user", async () => {
    seed(NAME1, 0, 0, 0);
    fail.DeleteUser = () => awsError("DeleteConflictException", 409, "Cannot delete entity, must remove users from group first.");
    const e = await rejection(provider().revoke(ctxFor(), { userName: NAME1 }));
    expect(e).toMatchObject({ code: "conflict", status: 409, retryable: true });
    expect(e.message).toContain(NAME1);
    expect(e.message).toMatch(/group membership/);
    expect(iamMock.commandCalls(DeleteUserCommand)).toHaveLength(4);
  });

  it("throttling or 5xx during revoke: a retryable error (the lease workflow retries)", async () => {
    seed(NAME1, 1, 0, 0);
    fail.DeleteAccessKey = () => throttling();
    expect(await rejection(provider().revoke(ctxFor(), { userName: NAME1 }))).toMatchObject({ code: "unavailable", retryable: true });
    fail.DeleteAccessKey = () => undefined;
    fail.ListAccessKeys = () => awsError("ServiceFailureException", 500);
    expect(await rejection(provider().revoke(ctxFor(), { userName: NAME1 }))).toMatchObject({ status: 503, retryable: true });
    expect(users.size).toBe(1);
  });

  it("refuses a handle without a valid user name", async () => {
    expect(await rejection(provider().revoke(ctxFor(), {}))).toMatchObject({ code: "invalid_request" });
    expect(await rejection(provider().revoke(ctxFor(), { userName: "bad name/../x" }))).toMatchObject({ code: "invalid_request" });
    expect(log).toEqual([]);
  });
});

describe("aws-iam-user: renew", () => {
  it("updates the rotor:expires-at tag with TagUser", async () => {
    const p = provider();
    const { out } = await issue(p);
    const later = new Date("2030-01-01T02:00:00.000Z");
    await p.renew(ctxFor(), out.handle, later);
    expect(inputs(iamMock, TagUserCommand)).toEqual([{ UserName: out.handle.userName, Tags: [{ Key: "rotor:expires-at", Value: "2030-01-01T02:00:00.000Z" }] }]);
    expect(users.get(out.handle.userName)!.tags).toContainEqual({ Key: "rotor:expires-at", Value: "2030-01-01T02:00:00.000Z" });
    expect(users.get(out.handle.userName)!.tags).toContainEqual({ Key: "rotor:lease-id", Value: LEASE_ID });
  });

  it("a user that no longer exists: 409 lease_gone", async () => {
    const e = await rejection(provider().renew(ctxFor(), { userName: "Rotor-Dynamic-gone" }, EXPIRES));
    expect(e).toMatchObject({ code: "lease_gone", status: 409 });
  });
});

describe("aws-iam-user: no secret in any error", () => {
  it("scrubs secrets even when AWS echoes them back in a message", async () => {
    rememberSecrets();
    fail.GetCallerIdentity = () => awsError("SignatureDoesNotMatch", 403, `signature mismatch for ${INTEGRATION_SECRET}`);
    const e1 = await rejection(provider().check(ctxFor(accessKeyIntegration)));
    expect(e1.message).toContain("[redacted]");
    expectNoSecrets(e1);

    installFake();
    rememberSecrets();
    let secret = "";
    iamMock.on(CreateAccessKeyCommand).callsFake(
      handler("CreateAccessKey", (i) => {
        const key = { id: fakeId("AKIA"), secret: "new-SECRET-echoed-wJalrXUtnFEMIK7MDENG" };
        secret = key.secret;
        issuedSecrets.push(secret);
        user(i.UserName).keys.push(key);
        return { AccessKey: { UserName: i.UserName, AccessKeyId: key.id, SecretAccessKey: key.secret, Status: "Active" } };
      }),
    );
    fail.GetCallerIdentity = () => awsError("InvalidClientTokenId", 403, `bad key new-SECRET-echoed-wJalrXUtnFEMIK7MDENG`);
    const e2 = await rejection(issue(provider({ usableWithinMs: 500 }), ctxFor(roleIntegration)));
    expect(secret).not.toBe("");
    expect(e2.message).toContain("[redacted]");
    expectNoSecrets(e2);
  });

  it("none of the failure paths puts a secret in a message", async () => {
    const errors: unknown[] = [];
    const scenarios: (() => void)[] = [
      () => (fail.PutUserPolicy = () => awsError("MalformedPolicyDocumentException", 400)),
      () => (fail.CreateAccessKey = () => awsError("LimitExceededException", 409)),
      () => (keyFailures = Infinity),
      () => ((keyFailures = Infinity), (fail.DeleteAccessKey = () => awsError("AccessDenied", 403))),
      () => (fail.CreateUser = () => awsError("ServiceFailureException", 500)),
    ];
    for (const integration of [accessKeyIntegration, roleIntegration])
      for (const setup of scenarios) {
        installFake();
        rememberSecrets();
        setup();
        errors.push(await issue(provider({ usableWithinMs: 1_000 }), ctxFor(integration)).catch((e) => e));
        for (const e of errors) expectNoSecrets(e);
      }
    expect(errors.every((e) => e instanceof RotorError)).toBe(true);
  });
});

it("a failing fake sleep is not needed: the default provider builds real clients (mocked) and issues", async () => {
  // The exported provider (default factories and real timers) against the mocks.
  const { out } = await (async () => {
    const handle = awsIamUserProvider.newHandle();
    return { out: await awsIamUserProvider.issue(ctxFor(), { leaseId: LEASE_ID, expiresAt: EXPIRES, handle }) };
  })();
  expect(out.values.USERNAME).toMatch(NAME);
  expect(await awsIamUserProvider.revoke(ctxFor(), out.handle)).toBe("revoked");
  void vi;
});
