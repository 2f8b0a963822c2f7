import type { SSTConfig } from "sst";
import { Core } from "./stacks/Core.ts";

/**
 * SST v2 app. `sst deploy` needs AWS; offline, `npm run synth` (stacks/synth.ts) and the
 * infra tests synthesize the same stacks through stacks/synthesize.ts.
 */
export default {
  config() {
    // `--region` (or initProject({ region })) overrides this default.
    return { name: "rotor", region: "us-east-1" };
  },
  stacks(app) {
    app.stack(Core);
  },
} satisfies SSTConfig;
