import type { AgentClient } from "../agents/client.ts";
import { generatePassword } from "../rotation/password.ts";
import type { ApplyRequest, Credential, RotationProvider, Target, TestResult } from "./types.ts";

/**
 * The shared shape of database updaters: every SQL statement runs in the agent
 * (`updateCredential`, `testCredentials`), so a provider only names its engine.
 */
export function agentDatabaseUpdater(engine: string, defaultPort: number): RotationProvider {
  return {
    type: engine,
    strategy: "updater",
    defaultPort,
    generate: () => generatePassword(),
    async apply(agents: AgentClient, r: ApplyRequest) {
      const out = await agents.call(r.target.agent, engine, {
        type: "updateCredential",
        body: {
          ...r.target.connection,
          managingUser: r.target.managingUser,
          rotateUser: { username: r.username, currentPassword: r.current, newPassword: r.pending },
        },
      });
      return { outcome: out.type };
    },
    async test(agents: AgentClient, target: Target, users: Credential[]): Promise<TestResult> {
      const out = await agents.call(target.agent, engine, { type: "testCredentials", body: { ...target.connection, users } });
      return out.type === "valid" ? { valid: true } : { valid: false, reason: out.reason };
    },
  };
}
