import type { SSTConfig } from "sst";
import { Core } from "./stacks/Core.ts";

/**
 * SST v2 app: `npx sst deploy --stage prod` deploys Rotor's own stack (stacks/Core.ts).
 * `sst deploy` needs AWS; offline, `npm run synth` (stacks/synth.ts) and the infra tests
 * synthesize the same stacks through stacks/synthesize.ts, plus the customer-side agent
 * template (stacks/CustomerAgent.ts), which is deliberately not listed here: customers
 * deploy it in their own accounts (docs/customer-agent.md).
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
