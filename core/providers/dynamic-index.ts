import { invalid } from "../errors.ts";
import { agentDatabaseDynamic } from "./agent-database-dynamic.ts";
import { awsIamUserProvider } from "./aws-iam-user.ts";
import type { DynamicProvider } from "./dynamic-types.ts";

export const dynamicProviders: Record<string, DynamicProvider> = {
  postgres: agentDatabaseDynamic("postgres"),
  mysql: agentDatabaseDynamic("mysql"),
  "aws-iam-user": awsIamUserProvider,
};

export function dynamicProvider(type: string): DynamicProvider {
  const p = dynamicProviders[type];
  if (!p) throw invalid(`unknown dynamic provider '${type}': one of ${Object.keys(dynamicProviders).join(", ")}`);
  return p;
}
