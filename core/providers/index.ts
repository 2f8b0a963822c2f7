import { invalid } from "../errors.ts";
import { mysqlProvider } from "./mysql.ts";
import { postgresProvider } from "./postgres.ts";
import type { RotationProvider } from "./types.ts";

export const rotationProviders: Record<string, RotationProvider> = {
  postgres: postgresProvider,
  mysql: mysqlProvider,
};

export function rotationProvider(type: string): RotationProvider {
  const p = rotationProviders[type];
  if (!p) throw invalid(`unknown provider '${type}': one of ${Object.keys(rotationProviders).join(", ")}`);
  return p;
}
