import { describe, expect, it } from "vitest";
import { AgentSpecSchema } from "../../core/agents/client.ts";
import { CreateDynamicSchema } from "../../core/dynamic/manage.ts";

// Rotor's cloud policy lets it assume only `role/Rotor*` with an ExternalId (stacks/handlers.ts):
// a spec naming any other role must be refused when it is created, not at its first use.
const good = ["arn:aws:iam::123456789012:role/RotorIntegration", "arn:aws:iam::123456789012:role/Rotor_postgres_eu-west-1", "arn:aws-us-gov:iam::123456789012:role/Rotor"];
const bad = [
  "arn:aws:iam::123456789012:role/rotor-integration", // IAM resource patterns are case-sensitive
  "arn:aws:iam::123456789012:role/AdminRole",
  "arn:aws:iam::123456789012:role/team/RotorIntegration", // a path: the ARN no longer matches role/Rotor*
  "arn:aws:iam::123456789012:user/RotorIntegration",
  "arn:aws:iam::12345:role/RotorIntegration",
];

const iamSpec = (roleArn: string) => ({
  project: "p",
  config: "c",
  name: "AWS",
  provider: "aws-iam-user",
  integration: { type: "assumeRole", roleArn, externalId: "ext-123" },
  policy: { Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: "s3:GetObject", Resource: "*" }] },
});
const lambdaAgent = (roleArn: string) => ({
  transport: "lambda",
  functionArn: "arn:aws:lambda:eu-west-1:123456789012:function:Rotor_postgres",
  roleArn,
  region: "eu-west-1",
});

describe("roles Rotor assumes", () => {
  it.each(good)("accepts %s for an aws-iam-user integration and a Lambda agent", (arn) => {
    expect(CreateDynamicSchema.safeParse(iamSpec(arn)).success).toBe(true);
    expect(AgentSpecSchema.safeParse(lambdaAgent(arn)).success).toBe(true);
  });

  it.each(bad)("refuses %s with a message naming the rule", (arn) => {
    for (const result of [CreateDynamicSchema.safeParse(iamSpec(arn)), AgentSpecSchema.safeParse(lambdaAgent(arn))]) {
      expect(result.success).toBe(false);
      expect(JSON.stringify(result.error?.issues)).toContain("starts with Rotor");
    }
  });
});

describe("HTTP agent URLs", () => {
  it("accept https anywhere and plain http on this machine only", () => {
    for (const url of ["https://agent.internal.example.com/rotor", "http://127.0.0.1:8080/", "http://localhost:9000", "http://[::1]:8080"])
      expect(AgentSpecSchema.safeParse({ transport: "http", url }).success, url).toBe(true);
  });

  it("refuse plain http to another host: the signed payload carries passwords", () => {
    for (const url of ["http://agent.internal.example.com/rotor", "http://10.0.0.5:8080", "ftp://127.0.0.1/"]) {
      const result = AgentSpecSchema.safeParse({ transport: "http", url });
      expect(result.success, url).toBe(false);
    }
    expect(JSON.stringify(AgentSpecSchema.safeParse({ transport: "http", url: "http://10.0.0.5" }).error?.issues)).toContain("must use https");
  });
});
