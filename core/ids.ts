import { randomBytes } from "node:crypto";

/** Random, URL-safe, sortable-enough ids with a readable type prefix. */
export function newId(prefix: string, bytes = 12): string {
  return `${prefix}_${randomBytes(bytes).toString("base64url").replace(/[-_]/g, "x")}`;
}
