import { z } from "zod";
import { secretNameSchema, slugSchema } from "../../core/names.ts";

/** Every task input is parsed at the boundary: a malformed event fails loudly, never half-applies. */
export const RefSchema = z.object({ project: slugSchema, config: slugSchema, name: secretNameSchema });
export const StepSchema = z.object({ ref: RefSchema, token: z.string().min(1).max(80) });
export const StepErrorSchema = z.object({ Error: z.string(), Cause: z.string().optional() });
