import { randomInt } from "node:crypto";
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
import { invalid, RotorError } from "../errors.ts";
import type { AwsIntegration, DynamicContext, DynamicProvider, IssueRequest, Issued } from "./dynamic-types.ts";

/**
 * Dynamic secret `aws-iam-user`: each lease is a fresh IAM user under `/rotor/` with the
 * recipe's policy inline and one access key. Revoking deletes the keys, the policies and
 * the user; "already gone" counts as revoked. See docs/aws-iam-user.md for the integration's
 * least-privilege policy and for the eventual-consistency wait.
 */

export const USER_PATH = "/rotor/";
export const USER_PREFIX = "Rotor-Dynamic-";
export const POLICY_NAME = "rotor-lease-policy";
export const ROLE_SESSION_NAME = "rotor-dynamic";
export const TAG_LEASE_ID = "rotor:lease-id";
export const TAG_EXPIRES_AT = "rotor:expires-at";
/** Default bound on waiting for a new access key to work (IAM is eventually consistent). */
export const DEFAULT_USABLE_WITHIN_MS = 20_000;
/** IAM's quota for the aggregate inline policies of one user, white space not counted. */
export const USER_INLINE_POLICY_MAX_CHARS = 2048;

const DEFAULT_REGION = "us-east-1";
const BASE36 = "abcdefghijklmnopqrstuvwxyz0123456789";
const IAM_NAME = /^[\w+=,.@-]{1,64}$/;
const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 2_000;
/** Full revoke passes when DeleteUser meets a conflict (usually IAM still seeing a key just deleted). */
const DELETE_PASSES = 4;
/** Cleanup attempts of a half-created user when AWS answers with a retryable error. */
const CLEANUP_ATTEMPTS = 3;

/** Structurally the SDK's AwsCredentialIdentity. */
export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}

export interface AwsIamUserProviderOptions {
  /** IAM client for the given credentials (undefined: Rotor's own ambient credentials). */
  iam?: (credentials: AwsCredentials | undefined, region: string) => IAMClient;
  /** STS client for the given credentials (undefined: Rotor's own, used to assume the integration role). */
  sts?: (credentials: AwsCredentials | undefined, region: string) => STSClient;
  sleep?: (ms: number) => Promise<void>;
  /** How long `issue` waits for the new key to work before it gives up and cleans up (default 20 s). */
  usableWithinMs?: number;
  now?: () => Date;
}

/** `Rotor-Dynamic-` + 20 base36 characters (34 of IAM's 64), from a CSPRNG. */
export function iamUserName(): string {
  let s = USER_PREFIX;
  for (let i = 0; i < 20; i++) s += BASE36[randomInt(BASE36.length)];
  return s;
}

/** Parses the recipe's policy document; throws `invalid` with a clear message if IAM could not take it. */
export function validatePolicy(policy: unknown): void {
  if (typeof policy !== "string" || policy.trim() === "") throw invalid("the IAM policy document is empty: give a JSON policy with a Statement");
  let doc: unknown;
  try {
    doc = JSON.parse(policy);
  } catch (e) {
    throw invalid(`the IAM policy document is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw invalid("the IAM policy document must be a JSON object with a Statement");
  const statement = (doc as Record<string, unknown>).Statement;
  if (statement === undefined) throw invalid("the IAM policy document has no Statement");
  const statements = Array.isArray(statement) ? statement : [statement];
  if (statements.length === 0) throw invalid("the IAM policy document's Statement is empty");
  if (statements.some((s) => typeof s !== "object" || s === null || Array.isArray(s)))
    throw invalid("each Statement of the IAM policy document must be a JSON object");
  const size = policy.replace(/\s/g, "").length;
  if (size > USER_INLINE_POLICY_MAX_CHARS)
    throw invalid(`the IAM policy document has ${size} characters without white space; IAM allows ${USER_INLINE_POLICY_MAX_CHARS} for a user's inline policies`);
}

// ---------------------------------------------------------------------------------------
// AWS errors

const NETWORK_CODES = new Set(["ECONNRESET", "ECONNREFUSED", "ETIMEDOUT", "ENOTFOUND", "EAI_AGAIN", "EPIPE", "ECONNABORTED"]);
const THROTTLING = new Set([
  "Throttling",
  "ThrottlingException",
  "ThrottledException",
  "RequestThrottled",
  "RequestThrottledException",
  "RequestLimitExceeded",
  "TooManyRequestsException",
  "SlowDown",
  "ServiceUnavailable",
  "ServiceUnavailableException",
  "ServiceFailure",
  "ServiceFailureException",
  "InternalFailure",
  "InternalError",
  "TimeoutError",
  "RequestTimeout",
  "RequestTimeoutException",
  "ConcurrentModification",
  "ConcurrentModificationException",
]);

interface AwsErrorLike {
  name?: string;
  Code?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $retryable?: unknown;
}

const errorName = (e: unknown) => {
  const x = (e ?? {}) as AwsErrorLike;
  return String(x.name && x.name !== "Error" ? x.name : (x.Code ?? x.code ?? "Error"));
};
const is = (e: unknown, code: string) => {
  const x = (e ?? {}) as AwsErrorLike;
  return x.name === code || x.name === `${code}Exception` || x.Code === code;
};
const isNoSuchEntity = (e: unknown) => is(e, "NoSuchEntity");

/** Throttling, 5xx, and network failures: retrying later may succeed. */
export function isRetryableAwsError(e: unknown): boolean {
  const x = (e ?? {}) as AwsErrorLike;
  const status = x.$metadata?.httpStatusCode;
  if (status !== undefined && (status >= 500 || status === 429)) return true;
  if (x.$retryable) return true;
  if (THROTTLING.has(errorName(e))) return true;
  return typeof x.code === "string" && NETWORK_CODES.has(x.code);
}

/** Did AWS definitely refuse the request (so it changed nothing)? False for 5xx, throttling and network failures. */
const definitelyRefused = (e: unknown) => !isRetryableAwsError(e) && (e as AwsErrorLike)?.$metadata?.httpStatusCode !== undefined;

function scrub(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (s && s.length >= 4) out = out.split(s).join("[redacted]");
  return out;
}

function describe(e: unknown, secrets: readonly string[]): string {
  const message = (e as AwsErrorLike)?.message ?? String(e);
  return scrub(`${errorName(e)}: ${message}`, secrets);
}

/** An AWS failure as a typed error: 503 and retryable for throttling/5xx/network, else 502 (422 for a refused policy). */
function awsFailure(e: unknown, action: string, secrets: readonly string[]): RotorError {
  if (e instanceof RotorError) return e;
  const message = `${action} failed: ${describe(e, secrets)}`;
  if (isRetryableAwsError(e)) return new RotorError("unavailable", message, 503, true);
  if (is(e, "MalformedPolicyDocument")) return new RotorError("policy_invalid", message, 422);
  return new RotorError("aws_error", message, 502);
}

// ---------------------------------------------------------------------------------------
// Clients and credentials

type ClientLike = { destroy(): void };

/** The clients one operation uses; destroyed afterwards when Rotor created them itself. */
class Session {
  private readonly owned: ClientLike[] = [];
  /** Secret strings that must never appear in an error message. */
  readonly secrets: string[] = [];
  constructor(
    readonly region: string,
    private readonly options: AwsIamUserProviderOptions,
  ) {}

  iam(credentials: AwsCredentials): IAMClient {
    if (this.options.iam) return this.options.iam(credentials, this.region);
    return this.own(new IAMClient({ region: this.region, credentials }));
  }
  sts(credentials: AwsCredentials | undefined): STSClient {
    if (this.options.sts) return this.options.sts(credentials, this.region);
    return this.own(new STSClient({ region: this.region, ...(credentials ? { credentials } : {}) }));
  }
  private own<T extends ClientLike>(c: T): T {
    this.owned.push(c);
    return c;
  }
  close() {
    for (const c of this.owned.splice(0)) c.destroy();
  }
}

function awsRecipe(ctx: DynamicContext) {
  if (ctx.recipe.provider !== "aws-iam-user") throw new Error(`not an aws-iam-user recipe: ${ctx.recipe.provider}`);
  return ctx.recipe;
}

const integrationSecrets = (i: AwsIntegration) => (i.type === "accessKey" ? [i.secretAccessKey] : []);

function userNameOf(handle: Record<string, string>): string {
  const name = handle.userName;
  if (typeof name !== "string" || !IAM_NAME.test(name)) throw invalid("the lease's handle has no valid IAM user name (userName)");
  return name;
}

const sleepReal = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------

export function createAwsIamUserProvider(options: AwsIamUserProviderOptions = {}): DynamicProvider {
  const sleep = options.sleep ?? sleepReal;
  const usableWithinMs = options.usableWithinMs ?? DEFAULT_USABLE_WITHIN_MS;
  const now = options.now ?? (() => new Date());
  /** Assumed-role credentials, reused until a minute before they expire (not by `check`, which proves the role afresh). */
  const roleCache = new Map<string, AwsCredentials>();

  async function credentialsFor(session: Session, integration: AwsIntegration, fresh: boolean): Promise<AwsCredentials> {
    if (integration.type === "accessKey") {
      session.secrets.push(integration.secretAccessKey);
      return { accessKeyId: integration.accessKeyId, secretAccessKey: integration.secretAccessKey };
    }
    const key = `${integration.roleArn}\n${integration.externalId}\n${session.region}`;
    const cached = roleCache.get(key);
    if (!fresh && cached?.expiration && cached.expiration.getTime() - 60_000 > now().getTime()) {
      session.secrets.push(cached.secretAccessKey, cached.sessionToken ?? "");
      return cached;
    }
    let out;
    try {
      out = await session
        .sts(undefined)
        .send(new AssumeRoleCommand({ RoleArn: integration.roleArn, RoleSessionName: ROLE_SESSION_NAME, ExternalId: integration.externalId, DurationSeconds: 900 }));
    } catch (e) {
      throw awsFailure(e, `sts:AssumeRole of ${integration.roleArn} (with the integration's external id)`, session.secrets);
    }
    const c = out.Credentials;
    if (!c?.AccessKeyId || !c.SecretAccessKey) throw new RotorError("aws_error", `sts:AssumeRole of ${integration.roleArn} returned no credentials`, 502);
    const creds: AwsCredentials = {
      accessKeyId: c.AccessKeyId,
      secretAccessKey: c.SecretAccessKey,
      sessionToken: c.SessionToken,
      expiration: c.Expiration ? new Date(c.Expiration) : new Date(now().getTime() + 900_000),
    };
    session.secrets.push(creds.secretAccessKey, creds.sessionToken ?? "");
    roleCache.set(key, creds);
    return creds;
  }

  async function withIam<T>(ctx: DynamicContext, fn: (iam: IAMClient, session: Session) => Promise<T>): Promise<T> {
    const { integration } = awsRecipe(ctx);
    const session = new Session(integration.region ?? DEFAULT_REGION, options);
    session.secrets.push(...integrationSecrets(integration));
    try {
      const iam = session.iam(await credentialsFor(session, integration, false));
      return await fn(iam, session);
    } finally {
      session.close();
    }
  }

  async function send<T>(session: Session, action: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (e) {
      throw awsFailure(e, action, session.secrets);
    }
  }

  /** Every page of a List* call; NoSuchEntity is rethrown as is (the caller decides what "gone" means). */
  async function listAll<P extends { IsTruncated?: boolean; Marker?: string }, I>(
    session: Session,
    action: string,
    page: (marker: string | undefined) => Promise<P>,
    items: (p: P) => I[] | undefined,
  ): Promise<I[]> {
    const all: I[] = [];
    let marker: string | undefined;
    for (;;) {
      let p: P;
      try {
        p = await page(marker);
      } catch (e) {
        if (isNoSuchEntity(e)) throw e;
        throw awsFailure(e, action, session.secrets);
      }
      all.push(...(items(p) ?? []));
      if (!p.IsTruncated || !p.Marker) return all;
      marker = p.Marker;
    }
  }

  /** Ignores NoSuchEntity: that part is already gone. */
  async function deletePart(session: Session, action: string, call: () => Promise<unknown>) {
    try {
      await call();
    } catch (e) {
      if (!isNoSuchEntity(e)) throw awsFailure(e, action, session.secrets);
    }
  }

  /**
   * The revoke sequence: access keys, inline policies, attached policies, the user.
   * `probe`: NoSuchEntity on the first listing means the user is already gone. Cleanup of a
   * user created a moment ago does not probe (IAM may not show it yet): it deletes anyway.
   */
  async function removeUser(iam: IAMClient, session: Session, userName: string, probe: boolean): Promise<"revoked" | "already_gone"> {
    const listOrNone = async <I>(fn: () => Promise<I[]>): Promise<I[] | "gone"> => {
      try {
        return await fn();
      } catch (e) {
        if (isNoSuchEntity(e)) return "gone";
        throw e;
      }
    };
    for (let pass = 1; ; pass++) {
      const keys = await listOrNone(() =>
        listAll(session, `iam:ListAccessKeys of ${userName}`, (Marker) => iam.send(new ListAccessKeysCommand({ UserName: userName, ...(Marker ? { Marker } : {}) })), (p) => p.AccessKeyMetadata),
      );
      if (keys === "gone" && probe) return pass === 1 ? "already_gone" : "revoked";
      for (const k of keys === "gone" ? [] : keys)
        if (k.AccessKeyId)
          await deletePart(session, `iam:DeleteAccessKey ${k.AccessKeyId} of ${userName}`, () =>
            iam.send(new DeleteAccessKeyCommand({ UserName: userName, AccessKeyId: k.AccessKeyId })),
          );
      const policies = await listOrNone(() =>
        listAll(session, `iam:ListUserPolicies of ${userName}`, (Marker) => iam.send(new ListUserPoliciesCommand({ UserName: userName, ...(Marker ? { Marker } : {}) })), (p) => p.PolicyNames),
      );
      for (const name of policies === "gone" ? [] : policies)
        await deletePart(session, `iam:DeleteUserPolicy ${name} of ${userName}`, () => iam.send(new DeleteUserPolicyCommand({ UserName: userName, PolicyName: name })));
      const attached = await listOrNone(() =>
        listAll(
          session,
          `iam:ListAttachedUserPolicies of ${userName}`,
          (Marker) => iam.send(new ListAttachedUserPoliciesCommand({ UserName: userName, ...(Marker ? { Marker } : {}) })),
          (p) => p.AttachedPolicies,
        ),
      );
      for (const a of attached === "gone" ? [] : attached)
        if (a.PolicyArn)
          await deletePart(session, `iam:DetachUserPolicy ${a.PolicyArn} from ${userName}`, () =>
            iam.send(new DetachUserPolicyCommand({ UserName: userName, PolicyArn: a.PolicyArn })),
          );
      try {
        await iam.send(new DeleteUserCommand({ UserName: userName }));
        return "revoked";
      } catch (e) {
        if (isNoSuchEntity(e)) return "revoked";
        if (!is(e, "DeleteConflict")) throw awsFailure(e, `iam:DeleteUser ${userName}`, session.secrets);
        if (pass >= DELETE_PASSES)
          throw new RotorError(
            "conflict",
            `iam:DeleteUser ${userName} failed: the user still has something Rotor did not create (group membership, login profile, MFA device, SSH key, signing certificate or service-specific credential): remove it, then revoke again (${describe(e, session.secrets)})`,
            409,
            true,
          );
        // Usually IAM still seeing a key or policy deleted a moment ago: list again and retry.
        await sleep(Math.min(FIRST_DELAY_MS * 2 ** (pass - 1), MAX_DELAY_MS));
      }
    }
  }

  /** Never leaks a half-created user: removes it (retrying AWS hiccups), then rethrows `cause` with what happened. */
  async function cleanUpAndThrow(iam: IAMClient, session: Session, userName: string, step: string, cause: RotorError): Promise<never> {
    let cleanupError: unknown;
    for (let attempt = 1; attempt <= CLEANUP_ATTEMPTS; attempt++) {
      try {
        await removeUser(iam, session, userName, false);
        cleanupError = undefined;
        break;
      } catch (e) {
        cleanupError = e;
        if (!(e instanceof RotorError && e.retryable) || attempt === CLEANUP_ATTEMPTS) break;
        await sleep(FIRST_DELAY_MS * 2 ** attempt);
      }
    }
    const what = `issuing IAM user ${userName} failed at ${step}: ${cause.message}`;
    const message = cleanupError
      ? `${what}; cleanup failed too (${scrub((cleanupError as Error).message ?? String(cleanupError), session.secrets)}): IAM user ${userName} (path ${USER_PATH}) may be left behind — revoke the lease again or delete the user by hand`
      : `${what}; the user was deleted`;
    throw new RotorError(cause.code, message, cause.status, cause.retryable);
  }

  /** New keys take seconds to work (IAM is eventually consistent): GetCallerIdentity with the key, backing off, within the bound. */
  async function waitUntilUsable(session: Session, credentials: AwsCredentials, userName: string): Promise<void> {
    const sts = session.sts({ accessKeyId: credentials.accessKeyId, secretAccessKey: credentials.secretAccessKey });
    const started = Date.now();
    let slept = 0;
    let delay = FIRST_DELAY_MS;
    let attempts = 0;
    for (;;) {
      attempts++;
      let last: unknown;
      try {
        await sts.send(new GetCallerIdentityCommand({}));
        return;
      } catch (e) {
        last = e;
      }
      const remaining = usableWithinMs - Math.max(Date.now() - started, slept);
      if (remaining <= 0)
        throw new RotorError(
          "unavailable",
          `the new access key of ${userName} did not work within ${usableWithinMs} ms (${attempts} tries; last: ${describe(last, session.secrets)})`,
          503,
          true,
        );
      const wait = Math.min(delay, remaining);
      await sleep(wait);
      slept += wait;
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    }
  }

  return {
    type: "aws-iam-user",

    newHandle: () => ({ userName: iamUserName() }),

    async check(ctx) {
      const { integration, policy } = awsRecipe(ctx);
      validatePolicy(policy);
      const session = new Session(integration.region ?? DEFAULT_REGION, options);
      session.secrets.push(...integrationSecrets(integration));
      const whose = integration.type === "accessKey" ? `the integration's access key ${integration.accessKeyId}` : `the role ${integration.roleArn}`;
      try {
        const creds = await credentialsFor(session, integration, true);
        await send(session, `sts:GetCallerIdentity with ${whose}`, () => session.sts(creds).send(new GetCallerIdentityCommand({})));
      } catch (e) {
        const err = awsFailure(e, "the AWS integration", session.secrets);
        if (err.retryable) throw err;
        throw new RotorError("integration_invalid", `the AWS integration does not work: ${err.message}`, 422);
      } finally {
        session.close();
      }
    },

    async issue(ctx, request: IssueRequest): Promise<Issued> {
      const { policy } = awsRecipe(ctx);
      validatePolicy(policy);
      const userName = request.handle?.userName === undefined ? iamUserName() : userNameOf(request.handle);
      return withIam(ctx, async (iam, session) => {
        let created;
        try {
          created = await iam.send(
            new CreateUserCommand({
              UserName: userName,
              Path: USER_PATH,
              Tags: [
                { Key: TAG_LEASE_ID, Value: request.leaseId },
                { Key: TAG_EXPIRES_AT, Value: request.expiresAt.toISOString() },
              ],
            }),
          );
        } catch (e) {
          const err = awsFailure(e, `iam:CreateUser ${userName}`, session.secrets);
          // A definite refusal created nothing. A timeout or 5xx may have created it, and
          // EntityAlreadyExists means an earlier attempt did (the name is this lease's own).
          if (definitelyRefused(e) && !is(e, "EntityAlreadyExists")) throw err;
          return cleanUpAndThrow(iam, session, userName, "CreateUser", is(e, "EntityAlreadyExists") ? new RotorError("unavailable", err.message, 503, true) : err);
        }
        const user = created.User;
        if (!user?.Arn || !user.UserId)
          return cleanUpAndThrow(iam, session, userName, "CreateUser", new RotorError("aws_error", "iam:CreateUser returned no user", 502));

        try {
          await iam.send(new PutUserPolicyCommand({ UserName: userName, PolicyName: POLICY_NAME, PolicyDocument: policy }));
        } catch (e) {
          return cleanUpAndThrow(iam, session, userName, "PutUserPolicy", awsFailure(e, `iam:PutUserPolicy ${POLICY_NAME} on ${userName}`, session.secrets));
        }

        let key;
        try {
          key = (await iam.send(new CreateAccessKeyCommand({ UserName: userName }))).AccessKey;
        } catch (e) {
          return cleanUpAndThrow(iam, session, userName, "CreateAccessKey", awsFailure(e, `iam:CreateAccessKey for ${userName}`, session.secrets));
        }
        if (!key?.AccessKeyId || !key.SecretAccessKey)
          return cleanUpAndThrow(iam, session, userName, "CreateAccessKey", new RotorError("aws_error", "iam:CreateAccessKey returned no key", 502));
        session.secrets.push(key.SecretAccessKey);

        try {
          await waitUntilUsable(session, { accessKeyId: key.AccessKeyId, secretAccessKey: key.SecretAccessKey }, userName);
        } catch (e) {
          return cleanUpAndThrow(iam, session, userName, "the wait for the new key", awsFailure(e, "the wait for the new key", session.secrets));
        }

        return {
          values: {
            ACCESS_KEY_ID: key.AccessKeyId,
            SECRET_ACCESS_KEY: key.SecretAccessKey,
            ARN: user.Arn,
            USERNAME: userName,
            USER_ID: user.UserId,
            POLICY_NAME,
          },
          handle: { ...request.handle, userName, accessKeyId: key.AccessKeyId, arn: user.Arn },
        };
      });
    },

    async renew(ctx, handle, expiresAt) {
      const userName = userNameOf(handle);
      await withIam(ctx, async (iam, session) => {
        try {
          await iam.send(new TagUserCommand({ UserName: userName, Tags: [{ Key: TAG_EXPIRES_AT, Value: expiresAt.toISOString() }] }));
        } catch (e) {
          if (isNoSuchEntity(e)) throw new RotorError("lease_gone", `IAM user ${userName} no longer exists: there is nothing to renew`, 409);
          throw awsFailure(e, `iam:TagUser ${userName}`, session.secrets);
        }
      });
    },

    async revoke(ctx, handle) {
      const userName = userNameOf(handle);
      return withIam(ctx, (iam, session) => removeUser(iam, session, userName, true));
    },
  };
}

export const awsIamUserProvider: DynamicProvider = createAwsIamUserProvider();
