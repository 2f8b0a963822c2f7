import type { Command } from "commander";
import { registerRotated } from "./rotated.ts";

/** Command groups of later capabilities (rotated, dynamic, leases, activity...). */
export const extraCommands: Array<(program: Command) => void> = [registerRotated];
