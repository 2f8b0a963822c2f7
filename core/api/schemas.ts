import { z } from "@hono/zod-openapi";
import { secretNameSchema, secretValueSchema, slugSchema } from "../names.ts";

export const ErrorSchema = z.object({ error: z.string(), message: z.string() }).openapi("Error");

export const errorResponses = {
  400: { description: "Invalid request", content: { "application/json": { schema: ErrorSchema } } },
  401: { description: "Missing, invalid or revoked token", content: { "application/json": { schema: ErrorSchema } } },
  403: { description: "Token lacks the scope", content: { "application/json": { schema: ErrorSchema } } },
  404: { description: "Not found", content: { "application/json": { schema: ErrorSchema } } },
} as const;

/** For routes that can conflict with existing state (a name taken, a change in flight). */
export const conflictResponse = (description: string) => ({ description, content: { "application/json": { schema: ErrorSchema } } });

export const json = <T extends z.ZodType>(schema: T, description = "OK") => ({
  description,
  content: { "application/json": { schema } },
});
export const jsonBody = <T extends z.ZodType>(schema: T) => ({
  required: true,
  content: { "application/json": { schema } },
});

export const ProjectName = slugSchema.openapi({ example: "backend" });
export const ConfigName = slugSchema.openapi({ example: "dev" });
export const SecretName = secretNameSchema.openapi({ example: "DATABASE_URL" });

export const ConfigQuery = z.object({ project: ProjectName, config: ConfigName });
export const SecretValue = secretValueSchema.openapi({ description: "A secret value: at most 64 KiB of UTF-8" });
