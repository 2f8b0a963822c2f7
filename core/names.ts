// The OpenAPI-extended zod: schemas built here get `.openapi()` whatever module loads first.
import { z } from "@hono/zod-openapi";

/** Project and config names: lowercase slugs, so they can never contain the '#' of a key. */
export const slugSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, "must be 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit");

export const secretNameSchema = z
  .string()
  .max(256, "secret names are at most 256 characters")
  .regex(/^[A-Z_][A-Z0-9_]*$/, "secret names must match ^[A-Z_][A-Z0-9_]*$");

export const MAX_VALUE_BYTES = 64 * 1024;

export const secretValueSchema = z
  .string()
  .refine((v) => Buffer.byteLength(v, "utf8") <= MAX_VALUE_BYTES, "secret values are at most 64 KiB");
