import { z } from "zod";

/**
 * The signed request protocol between Rotor and its agents (DESIGN.md, "Agents and the
 * signed request protocol"). Every payload is parsed by these schemas at the boundary, on
 * both sides: Rotor validates before signing, the agent after verifying.
 */

/** Bumped when an agent gains request types or changes an answer; reported by `status`. */
export const AGENT_PROTOCOL_VERSION = "1";
export const MAX_CLOCK_SKEW_MS = 30_000;

// NUL cannot be stored by PostgreSQL nor sent in a MySQL literal; refuse it early.
const noNul = (s: string) => !s.includes("\0");
const username = z.string().min(1).max(128).refine(noNul, "must not contain NUL");
const password = z.string().min(1).max(1024).refine(noNul, "must not contain NUL");
const isoTimestamp = z.iso.datetime({ offset: true });

/** `true` = TLS with the system CAs; the object form is what Doppler's agents accept. */
export const SslSchema = z.union([
  z.boolean(),
  z.object({
    ca: z.string().optional(),
    cert: z.string().optional(),
    key: z.string().optional(),
    rejectUnauthorized: z.boolean().optional(),
  }),
]);

const target = {
  host: z.string().min(1).max(255),
  port: z.number().int().min(1).max(65535),
  database: z.string().min(1).max(128),
  ssl: SslSchema.optional(),
};
const login = z.object({ username, password });

export const StatusBodySchema = z.object({});

export const TestCredentialsBodySchema = z.object({ ...target, users: z.array(login).min(1).max(10) });

export const UpdateCredentialBodySchema = z.object({
  ...target,
  managingUser: login,
  rotateUser: z.object({ username, currentPassword: password, newPassword: password }),
});

/** Grants are statement templates; `{{username}}` becomes the engine's quoted account name. */
export const CreateUserBodySchema = z.object({
  ...target,
  managingUser: login,
  user: login,
  grants: z.array(z.string().min(1).max(4096)).max(50),
  expiresAt: isoTimestamp,
});

export const DeleteUserBodySchema = z.object({ ...target, managingUser: login, username });

/** Moves a leased user's expiry (PostgreSQL VALID UNTIL); where the engine has none, checks the user still exists. */
export const RenewUserBodySchema = z.object({ ...target, managingUser: login, username, expiresAt: isoTimestamp });

export const REQUEST_TYPES = ["status", "testCredentials", "updateCredential", "createUser", "deleteUser", "renewUser"] as const;
export type RequestType = (typeof REQUEST_TYPES)[number];

const request = <T extends RequestType, B extends z.ZodType>(type: T, body: B) =>
  z.object({ type: z.literal(type), timestamp: isoTimestamp, body });

export const AgentRequestSchema = z.discriminatedUnion("type", [
  request("status", StatusBodySchema),
  request("testCredentials", TestCredentialsBodySchema),
  request("updateCredential", UpdateCredentialBodySchema),
  request("createUser", CreateUserBodySchema),
  request("deleteUser", DeleteUserBodySchema),
  request("renewUser", RenewUserBodySchema),
]);

export type AgentRequest = z.infer<typeof AgentRequestSchema>;
export type RequestOf<T extends RequestType> = Extract<AgentRequest, { type: T }>;
/** What a caller hands to the signer: the signer stamps the timestamp itself. */
export type UnsignedRequest = AgentRequest extends infer R ? (R extends AgentRequest ? Omit<R, "timestamp"> : never) : never;

export type Ssl = z.infer<typeof SslSchema>;
export type StatusBody = z.infer<typeof StatusBodySchema>;
export type TestCredentialsBody = z.infer<typeof TestCredentialsBodySchema>;
export type UpdateCredentialBody = z.infer<typeof UpdateCredentialBodySchema>;
export type CreateUserBody = z.infer<typeof CreateUserBodySchema>;
export type DeleteUserBody = z.infer<typeof DeleteUserBodySchema>;
export type RenewUserBody = z.infer<typeof RenewUserBodySchema>;

// Answers (the `body` of an ok response), one per request type.
export const StatusResultSchema = z.object({ type: z.literal("ok"), engine: z.string(), version: z.string() });
export const TestCredentialsResultSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("valid") }),
  z.object({ type: z.literal("invalid"), reason: z.string() }),
]);
/** `already_applied`: a retry after the target changed but before Rotor recorded it. */
export const UpdateCredentialResultSchema = z.object({ type: z.enum(["updated", "already_applied"]) });
export const CreateUserResultSchema = z.object({ type: z.enum(["created", "already_applied"]) });
/** `already_gone` counts as success: revocation must be idempotent. */
export const DeleteUserResultSchema = z.object({
  type: z.enum(["deleted", "already_gone"]),
  terminatedSessions: z.number().int().min(0),
});
export const RenewUserResultSchema = z.object({ type: z.literal("renewed") });

export type StatusResult = z.infer<typeof StatusResultSchema>;
export type TestCredentialsResult = z.infer<typeof TestCredentialsResultSchema>;
export type UpdateCredentialResult = z.infer<typeof UpdateCredentialResultSchema>;
export type CreateUserResult = z.infer<typeof CreateUserResultSchema>;
export type DeleteUserResult = z.infer<typeof DeleteUserResultSchema>;
export type RenewUserResult = z.infer<typeof RenewUserResultSchema>;

export interface ResultOf {
  status: StatusResult;
  testCredentials: TestCredentialsResult;
  updateCredential: UpdateCredentialResult;
  createUser: CreateUserResult;
  deleteUser: DeleteUserResult;
  renewUser: RenewUserResult;
}

/** Stable codes an agent answers with; `code` stays an open string for older/newer agents. */
export const AGENT_ERROR_CODES = [
  "unauthorized", // signature, algorithm, key or timestamp refused
  "invalid_request", // signed, but not a request this agent understands
  "current_credential_invalid", // updateCredential: neither current nor new password logs in
  "managing_credential_invalid", // the managing user could not log in
  "user_exists", // createUser: the name is taken by a user with another password
  "user_not_found", // renewUser: the user is gone (deleted by hand?): the lease is dead
  "unavailable", // the database could not be reached; retry later
  "database_error", // the database refused a statement
  "agent_misconfigured", // no JWKS configured
  "internal",
] as const;
export type AgentErrorCode = (typeof AGENT_ERROR_CODES)[number];

export const ErrorMetadataSchema = z.object({ code: z.string(), message: z.string(), retryable: z.boolean() });
export type ErrorMetadata = z.infer<typeof ErrorMetadataSchema>;

export const AgentResponseSchema = z.discriminatedUnion("status", [
  z.object({ status: z.literal("ok"), body: z.record(z.string(), z.unknown()) }),
  z.object({ status: z.literal("error"), metadata: ErrorMetadataSchema }),
]);
export type AgentResponse<B = Record<string, unknown>> =
  | { status: "ok"; body: B }
  | { status: "error"; metadata: ErrorMetadata };
