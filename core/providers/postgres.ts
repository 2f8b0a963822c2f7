import { agentDatabaseUpdater } from "./agent-database.ts";

/** PostgreSQL login roles, rotated with ALTER ROLE … PASSWORD by the postgres agent. */
export const postgresProvider = agentDatabaseUpdater("postgres", 5432);
