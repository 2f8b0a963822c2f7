/**
 * The Core stack, synthesized offline (no AWS account, no network) through the same code
 * path as `npm run synth` (stacks/synthesize.ts).
 *
 * The template assertions use inline placeholder code (`code: "placeholder"`) so they do
 * not depend on functions/api.ts compiling; one test at the end builds the real esbuild
 * bundle of functions/api.ts, as `npm run synth` does.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Match, Template } from "aws-cdk-lib/assertions";
import * as iam from "aws-cdk-lib/aws-iam";
import { getStack } from "sst/constructs/FunctionalStack.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Core } from "../../stacks/Core.ts";
import { assertLeastPrivilege } from "../../stacks/lambda.ts";
import { synthesize } from "../../stacks/synthesize.ts";

type Resource = { Type: string; Properties: Record<string, any>; DependsOn?: string[] };

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "rotor-infra-"));
let template: Template;
let stackName: string;

function only(type: string, props?: Record<string, unknown>): [string, Resource] {
  const found = Object.entries(template.findResources(type, props ? { Properties: props } : undefined));
  expect(found, `exactly one ${type}`).toHaveLength(1);
  return found[0] as [string, Resource];
}

beforeAll(async () => {
  await synthesize({ stage: "test", region: "us-east-1", account: "123456789012", code: "placeholder", outdir: path.join(tmp, "placeholder") });
  const stack = getStack(Core);
  stackName = stack.stackName;
  template = Template.fromStack(stack);
});

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("Core stack", () => {
  it("is named after stage and app", () => {
    expect(stackName).toBe("test-rotor-Core");
  });

  it("has one pay-per-request table with pk/sk, gsi1 (ALL), PITR, retained", () => {
    const [, table] = only("AWS::DynamoDB::Table");
    expect(table.Properties).toMatchObject({
      KeySchema: [
        { AttributeName: "pk", KeyType: "HASH" },
        { AttributeName: "sk", KeyType: "RANGE" },
      ],
      BillingMode: "PAY_PER_REQUEST",
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      GlobalSecondaryIndexes: [
        {
          IndexName: "gsi1",
          KeySchema: [
            { AttributeName: "gsi1pk", KeyType: "HASH" },
            { AttributeName: "gsi1sk", KeyType: "RANGE" },
          ],
          Projection: { ProjectionType: "ALL" },
        },
      ],
    });
    expect(table.Properties.GlobalSecondaryIndexes).toHaveLength(1);
    expect(new Set(table.Properties.AttributeDefinitions)).toEqual(
      new Set([
        { AttributeName: "pk", AttributeType: "S" },
        { AttributeName: "sk", AttributeType: "S" },
        { AttributeName: "gsi1pk", AttributeType: "S" },
        { AttributeName: "gsi1sk", AttributeType: "S" },
      ]),
    );
    template.hasResource("AWS::DynamoDB::Table", { DeletionPolicy: "Retain", UpdateReplacePolicy: "Retain" });
  });

  it("has a rotating KMS key with alias/rotor-<stage>", () => {
    const [keyId, key] = only("AWS::KMS::Key");
    expect(key.Properties.EnableKeyRotation).toBe(true);
    template.hasResourceProperties("AWS::KMS::Alias", {
      AliasName: "alias/rotor-test",
      TargetKeyId: { "Fn::GetAtt": [keyId, "Arn"] },
    });
  });

  describe("API function", () => {
    let tableId: string;
    let keyId: string;
    let fnId: string;
    let fn: Resource;

    beforeAll(() => {
      [tableId] = only("AWS::DynamoDB::Table");
      [keyId] = only("AWS::KMS::Key");
      [fnId, fn] = only("AWS::Lambda::Function", { Description: "Rotor HTTP API" });
    });

    it("runs Node 20 on arm64 with the cloud environment", () => {
      expect(fn.Properties.Runtime).toBe("nodejs20.x");
      expect(fn.Properties.Architectures).toEqual(["arm64"]);
      expect(fn.Properties.Handler).toBe("index.handler");
      expect(fn.Properties.Environment.Variables).toEqual({
        ROTOR_MODE: "cloud",
        ROTOR_TABLE: { Ref: tableId },
        ROTOR_KMS_KEY_ID: { "Fn::GetAtt": [keyId, "Arn"] },
      });
    });

    it("logs to its own log group kept one month", () => {
      const logGroupId = fn.Properties.LoggingConfig.LogGroup.Ref as string;
      const logGroup = template.toJSON().Resources[logGroupId] as Resource;
      expect(logGroup.Type).toBe("AWS::Logs::LogGroup");
      expect(logGroup.Properties.RetentionInDays).toBe(30);
      // No legacy Custom::LogRetention (its singleton Lambda has logs:* on "*").
      expect(template.findResources("Custom::LogRetention")).toEqual({});
    });

    it("has exactly the least-privilege IAM statements", () => {
      const roleId = fn.Properties.Role["Fn::GetAtt"][0] as string;
      const logGroupId = fn.Properties.LoggingConfig.LogGroup.Ref as string;
      const role = template.toJSON().Resources[roleId] as Resource;
      // No managed policies (AWSLambdaBasicExecutionRole grants logs on "*"), no inline ones.
      expect(role.Properties.ManagedPolicyArns).toBeUndefined();
      expect(role.Properties.Policies).toBeUndefined();
      expect(role.Properties.AssumeRolePolicyDocument.Statement).toEqual([
        { Action: "sts:AssumeRole", Effect: "Allow", Principal: { Service: "lambda.amazonaws.com" } },
      ]);

      const policies = Object.values(
        template.findResources("AWS::IAM::Policy", { Properties: { Roles: Match.arrayWith([{ Ref: roleId }]) } }),
      ) as Resource[];
      expect(policies).toHaveLength(1);
      expect(template.findResources("AWS::IAM::ManagedPolicy")).toEqual({});
      const tableArn = { "Fn::GetAtt": [tableId, "Arn"] };
      expect(policies[0].Properties.PolicyDocument.Statement).toEqual([
        {
          Effect: "Allow",
          Action: ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query"],
          Resource: [tableArn, { "Fn::Join": ["", [tableArn, "/index/*"]] }],
        },
        {
          Effect: "Allow",
          Action: ["kms:GenerateDataKey", "kms:Decrypt"],
          Resource: { "Fn::GetAtt": [keyId, "Arn"] },
        },
        {
          // Writing its own log group only (GetAtt Arn is "…:log-group:<name>:*").
          Effect: "Allow",
          Action: ["logs:CreateLogStream", "logs:PutLogEvents"],
          Resource: { "Fn::GetAtt": [logGroupId, "Arn"] },
        },
      ]);
    });

    it("no IAM policy in the stack grants anything on resource \"*\"", () => {
      for (const [id, policy] of Object.entries(template.findResources("AWS::IAM::Policy"))) {
        for (const s of (policy as Resource).Properties.PolicyDocument.Statement) {
          expect([s.Resource].flat(), id).not.toContain("*");
          expect([s.Action].flat().some((a: string) => a.includes("*")), id).toBe(false);
        }
      }
    });
  });

  it("serves the function on an HTTP API: $default route, payload 2.0, URL output", () => {
    const [fnId] = only("AWS::Lambda::Function", { Description: "Rotor HTTP API" });
    const [apiId] = only("AWS::ApiGatewayV2::Api", { ProtocolType: "HTTP" });
    const [integrationId] = only("AWS::ApiGatewayV2::Integration", {
      ApiId: { Ref: apiId },
      IntegrationType: "AWS_PROXY",
      IntegrationUri: { "Fn::GetAtt": [fnId, "Arn"] },
      PayloadFormatVersion: "2.0",
    });
    only("AWS::ApiGatewayV2::Route", {
      ApiId: { Ref: apiId },
      RouteKey: "$default",
      Target: { "Fn::Join": ["", ["integrations/", { Ref: integrationId }]] },
    });
    template.hasResourceProperties("AWS::ApiGatewayV2::Stage", { ApiId: { Ref: apiId }, StageName: "$default", AutoDeploy: true });
    template.hasResourceProperties("AWS::Lambda::Permission", {
      Action: "lambda:InvokeFunction",
      FunctionName: { "Fn::GetAtt": [fnId, "Arn"] },
      Principal: "apigateway.amazonaws.com",
    });
    template.hasOutput("ApiUrl", {
      Value: { "Fn::Join": ["", Match.arrayWith(["https://", { Ref: apiId }])] },
    });
  });
});

describe("rotorFunction guard", () => {
  it("rejects \"*\" resources and wildcard actions", () => {
    const star = new iam.PolicyStatement({ actions: ["dynamodb:GetItem"], resources: ["*"] });
    const wild = new iam.PolicyStatement({ actions: ["dynamodb:*"], resources: ["arn:aws:dynamodb:us-east-1:1:table/t"] });
    const ok = new iam.PolicyStatement({ actions: ["dynamodb:GetItem"], resources: ["arn:aws:dynamodb:us-east-1:1:table/t"] });
    expect(() => assertLeastPrivilege("x", [star])).toThrow(/no "\*"/);
    expect(() => assertLeastPrivilege("x", [wild])).toThrow(/explicit actions/);
    expect(() => assertLeastPrivilege("x", [ok])).not.toThrow();
  });
});

describe("npm run synth path", () => {
  it("bundles functions/api.ts with esbuild into an S3 asset", async () => {
    const bundleDir = path.join(tmp, "bundles");
    const { stacks } = await synthesize({ stage: "test", code: "bundle", bundleDir, outdir: path.join(tmp, "bundle") });
    expect(stacks.map((s) => s.stackName)).toEqual(["test-rotor-Core"]);
    const t = Template.fromJSON(stacks[0]!.template);
    t.hasResourceProperties("AWS::Lambda::Function", {
      Description: "Rotor HTTP API",
      Handler: "index.handler",
      Code: { S3Bucket: Match.anyValue(), S3Key: Match.stringLikeRegexp("\\.zip$") },
    });
    // Env-agnostic account when none is given: asset bucket resolves at deploy time.
    const bundle = path.join(bundleDir, "test-rotor-Core", "functions-api", "index.mjs");
    const bytes = fs.statSync(bundle).size;
    expect(bytes).toBeGreaterThan(1_000);
    expect(bytes).toBeLessThan(10 * 1024 * 1024);
  });
});
