/**
 * The customer-side template (stacks/CustomerAgent.ts): what a customer deploys in their
 * own account so Rotor can reach their database through the `Rotor_<engine>` agent.
 * Synthesized offline, as `npm run synth` does; docs/customer-agent.template.json must be
 * that same template.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CUSTOMER_PARAMETERS } from "../../stacks/CustomerAgent.ts";
import { synthesize } from "../../stacks/synthesize.ts";
import { ACCOUNT, REGION, findAll, only, render, renderDeep, roleStatements, type TemplateJson } from "./support.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "rotor-infra-agent-"));
let t: TemplateJson;
let coreAssumeResource: string;

beforeAll(async () => {
  // Rotor's account is set on purpose: none of it may leak into the customer's template.
  const { stacks } = await synthesize({ stage: "test", region: REGION, account: ACCOUNT, code: "placeholder", outdir: tmp });
  const stack = stacks.find((s) => s.id === "CustomerAgent");
  expect(stack?.stackName).toBe("test-rotor-CustomerAgent");
  t = stack!.template as TemplateJson;
  // What Rotor's own functions may assume (test/infra/core-stack.test.ts checks it exactly).
  const core = stacks.find((s) => s.id === "Core")!.template as TemplateJson;
  const statements = findAll(core, "AWS::IAM::Policy").flatMap(([, p]) => p.Properties.PolicyDocument.Statement);
  coreAssumeResource = render(statements.find((s: any) => s.Action === "sts:AssumeRole").Resource);
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const fn = () => only(t, "AWS::Lambda::Function");
const roles = () => ({
  execution: only(t, "AWS::IAM::Role", (r) => r.Properties.AssumeRolePolicyDocument.Statement[0].Principal.Service === "lambda.amazonaws.com"),
  rotor: only(t, "AWS::IAM::Role", (r) => !!r.Properties.AssumeRolePolicyDocument.Statement[0].Principal.AWS),
});

describe("customer agent template", () => {
  it("is deployable anywhere with plain CloudFormation: no assets, no CDK bootstrap, no SST, no Rotor account", () => {
    expect(Object.keys(t.Parameters!).sort()).toEqual([...CUSTOMER_PARAMETERS].sort());
    expect(Object.keys(t.Rules!)).toEqual(["SubnetsInVpc"]);
    const text = JSON.stringify(t);
    expect(text).not.toContain(ACCOUNT);
    expect(text).not.toMatch(/cdk-hnb659fds|BootstrapVersion|sst:|CustomResourceHandler/);
    expect(Object.values(t.Resources).map((r) => r.Type).sort()).toEqual(
      ["AWS::IAM::Policy", "AWS::IAM::Role", "AWS::IAM::Role", "AWS::Lambda::Function", "AWS::Logs::LogGroup"].sort(),
    );
  });

  it("takes the engine, Rotor's account, the ExternalId, the JWKS URL, the network and the code as parameters", () => {
    const p = t.Parameters!;
    expect(p.Engine).toMatchObject({ Type: "String", AllowedValues: ["postgres", "mysql"] });
    expect(p.RotorAccountId).toMatchObject({ Type: "String", AllowedPattern: "^\\d{12}$" });
    expect(p.ExternalId).toMatchObject({ Type: "String", MinLength: 2, MaxLength: 1224 });
    expect(p.JwksUrl).toMatchObject({ Type: "String", AllowedPattern: "^https://\\S+$" });
    expect(p.VpcId.Type).toBe("AWS::EC2::VPC::Id");
    expect(p.SubnetIds.Type).toBe("List<AWS::EC2::Subnet::Id>");
    expect(p.SecurityGroupIds.Type).toBe("List<AWS::EC2::SecurityGroup::Id>");
    expect(p.AllowCodeUpdates).toMatchObject({ Type: "String", AllowedValues: ["false", "true"], Default: "false" });
    expect(t.Rules!.SubnetsInVpc.Assertions[0].Assert).toEqual({
      "Fn::EachMemberEquals": [{ "Fn::ValueOfAll": ["AWS::EC2::Subnet::Id", "VpcId"] }, { Ref: "VpcId" }],
    });
  });

  it("runs the agent as Rotor_<engine>: Node 20, arm64, in the VPC, JWKS URL from the parameter, logs kept", () => {
    const [, f] = fn();
    expect(render(f.Properties.FunctionName)).toBe("Rotor_{Engine}");
    expect(f.Properties).toMatchObject({ Runtime: "nodejs20.x", Architectures: ["arm64"], Handler: "index.handler" });
    expect(f.Properties.Code).toEqual({ S3Bucket: { Ref: "AgentCodeBucket" }, S3Key: { Ref: "AgentCodeKey" } });
    expect(f.Properties.VpcConfig).toEqual({ SubnetIds: { Ref: "SubnetIds" }, SecurityGroupIds: { Ref: "SecurityGroupIds" } });
    expect(f.Properties.Environment).toEqual({ Variables: { ROTOR_JWKS_URL: { Ref: "JwksUrl" }, NODE_EXTRA_CA_CERTS: "/var/runtime/ca-cert.pem" } });
    const logGroup = t.Resources[f.Properties.LoggingConfig.LogGroup.Ref]!;
    expect(logGroup.Type).toBe("AWS::Logs::LogGroup");
    expect(renderDeep(logGroup.Properties)).toEqual({ LogGroupName: "/aws/lambda/Rotor_{Engine}", RetentionInDays: "{LogRetentionDays}" });
  });

  it("gives the agent an execution role with VPC access only (AWS's AWSLambdaVPCAccessExecutionRole)", () => {
    const [execId, exec] = roles().execution;
    expect(fn()[1].Properties.Role).toEqual({ "Fn::GetAtt": [execId, "Arn"] });
    expect(exec.Properties.AssumeRolePolicyDocument.Statement).toEqual([
      { Action: "sts:AssumeRole", Effect: "Allow", Principal: { Service: "lambda.amazonaws.com" } },
    ]);
    expect(exec.Properties.ManagedPolicyArns.map(render)).toEqual(["arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"]);
    expect(roleStatements(t, execId)).toEqual([]);
  });

  it("lets only Rotor's account, with the ExternalId, assume the Rotor role", () => {
    const [, role] = roles().rotor;
    expect(renderDeep(role.Properties.AssumeRolePolicyDocument.Statement)).toEqual([
      {
        Action: "sts:AssumeRole",
        Effect: "Allow",
        Principal: { AWS: "arn:aws:iam::{RotorAccountId}:root" },
        Condition: { StringEquals: { "sts:ExternalId": "{ExternalId}" } },
      },
    ]);
  });

  it("names the role Rotor_<engine>_<region>, which Rotor's own functions are allowed to assume", () => {
    const [, role] = roles().rotor;
    const name = render(role.Properties.RoleName);
    expect(name).toBe(`Rotor_{Engine}_${REGION}`);
    expect(coreAssumeResource).toBe("arn:aws:iam::*:role/Rotor*");
    const pattern = new RegExp(`^${coreAssumeResource.split("*").map((s) => s.replace(/[.?+^$()[\]{}|\\]/g, "\\$&")).join(".*")}$`);
    expect(`arn:aws:iam::210987654321:role/${name.replace("{Engine}", "postgres")}`).toMatch(pattern);
  });

  it("allows the Rotor role to invoke and describe that one function, and nothing else", () => {
    const [rotorId, role] = roles().rotor;
    const [fnId] = fn();
    const inline = role.Properties.Policies.flatMap((p: any) => p.PolicyDocument.Statement);
    expect(inline).toEqual([{ Action: ["lambda:InvokeFunction", "lambda:GetFunction"], Effect: "Allow", Resource: { "Fn::GetAtt": [fnId, "Arn"] } }]);
    expect(role.Properties.ManagedPolicyArns).toBeUndefined();
    const all = roleStatements(t, rotorId);
    for (const s of all) expect(s.Resource).toEqual([`{${fnId}.Arn}`]);
  });

  it("adds lambda:UpdateFunctionCode on that function only when AllowCodeUpdates is true", () => {
    const [rotorId] = roles().rotor;
    const [fnId] = fn();
    const [, policy] = only(t, "AWS::IAM::Policy");
    expect(policy.Condition).toBe("CodeUpdatesAllowed");
    expect(t.Conditions!.CodeUpdatesAllowed).toEqual({ "Fn::Equals": [{ Ref: "AllowCodeUpdates" }, "true"] });
    expect(policy.Properties.Roles).toEqual([{ Ref: rotorId }]);
    expect(policy.Properties.PolicyDocument.Statement).toEqual([
      { Action: "lambda:UpdateFunctionCode", Effect: "Allow", Resource: { "Fn::GetAtt": [fnId, "Arn"] } },
    ]);
  });

  it("outputs what Rotor needs: the function ARN, the role ARN, the region", () => {
    const [fnId] = fn();
    const [rotorId] = roles().rotor;
    expect(Object.fromEntries(Object.entries(t.Outputs!).map(([k, v]) => [k, render(v.Value)]))).toEqual({
      AgentFunctionArn: `{${fnId}.Arn}`,
      AgentRoleArn: `{${rotorId}.Arn}`,
      AgentRegion: REGION,
    });
  });

  it("is what docs/customer-agent.template.json holds (run `npm run synth` after changing it)", () => {
    const doc = JSON.parse(fs.readFileSync(path.join(ROOT, "docs", "customer-agent.template.json"), "utf8"));
    expect(doc).toEqual(t);
  });
});
