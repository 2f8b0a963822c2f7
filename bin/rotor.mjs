#!/usr/bin/env node
// The `rotor` command. Rotor ships TypeScript sources; tsx compiles them on the fly.
import { register } from "tsx/esm/api";

register();
await import("../cli/main.ts");
