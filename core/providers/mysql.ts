import { agentDatabaseUpdater } from "./agent-database.ts";

/** MySQL / MariaDB accounts, rotated with ALTER USER … IDENTIFIED BY by the mysql agent. */
export const mysqlProvider = agentDatabaseUpdater("mysql", 3306);
