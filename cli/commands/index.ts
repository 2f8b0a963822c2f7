import type { Command } from "commander";
import { registerRotated } from "./rotated.ts";
import { registerDynamic } from "./dynamic.ts";
import { registerLeases } from "./leases.ts";
import { registerActivity } from "./activity.ts";
import { registerWebhooks } from "./webhooks.ts";

/** Command groups of later capabilities (rotated, dynamic, leases, activity...). */
export const extraCommands: Array<(program: Command) => void> = [registerRotated, registerDynamic, registerLeases, registerActivity, registerWebhooks];
