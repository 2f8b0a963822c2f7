import { Duration, RemovalPolicy } from "aws-cdk-lib";
import * as apigwv2 from "aws-cdk-lib/aws-apigatewayv2";
import { HttpLambdaIntegration } from "aws-cdk-lib/aws-apigatewayv2-integrations";
import * as dynamodb from "aws-cdk-lib/aws-dynamodb";
import * as kms from "aws-cdk-lib/aws-kms";
import type { Construct } from "constructs";
import type { StackContext } from "sst/constructs";
import { KEY_ENVELOPE, TABLE_READ_WRITE, keyStatement, rotorFunction, tableStatement } from "./lambda.ts";

/**
 * Rotor's foundation: the single table, the master key, the API function and the HTTP API.
 *
 * Later additions plug in here, each one a small function like the ones below:
 *  - workflows: `statemachines/*.asl.json` loaded with `DefinitionBody.fromString` and
 *    `definitionSubstitutions` pointing at task Lambdas built with `rotorFunction`;
 *  - a Scheduler schedule group and an EventBridge bus.
 */
export function Core({ stack, app }: StackContext) {
  const { table, key } = storage(stack, app.stage);
  const api = httpApi(stack, { table, key });

  stack.addOutputs({
    ApiUrl: api.url,
    TableName: table.tableName,
    KeyArn: key.keyArn,
  });
  return { table, key, ...api };
}

/** Environment every Rotor function gets in cloud mode. */
export function cloudEnvironment(table: dynamodb.ITable, key: kms.IKey): Record<string, string> {
  return {
    ROTOR_MODE: "cloud",
    ROTOR_TABLE: table.tableName,
    ROTOR_KMS_KEY_ID: key.keyArn,
  };
}

function storage(scope: Construct, stage: string) {
  const table = new dynamodb.Table(scope, "Table", {
    partitionKey: { name: "pk", type: dynamodb.AttributeType.STRING },
    sortKey: { name: "sk", type: dynamodb.AttributeType.STRING },
    billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
    pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
    removalPolicy: RemovalPolicy.RETAIN,
  });
  // "Due" work: leases by expiry, flips by due time (see core/store/table.ts).
  table.addGlobalSecondaryIndex({
    indexName: "gsi1",
    partitionKey: { name: "gsi1pk", type: dynamodb.AttributeType.STRING },
    sortKey: { name: "gsi1sk", type: dynamodb.AttributeType.STRING },
    projectionType: dynamodb.ProjectionType.ALL,
  });

  // Master key for envelope encryption of secret values (data keys per value).
  const key = new kms.Key(scope, "Key", {
    description: `Rotor master key (${stage})`,
    enableKeyRotation: true,
    alias: `alias/rotor-${stage}`,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  return { table, key };
}

function httpApi(scope: Construct, { table, key }: { table: dynamodb.ITable; key: kms.IKey }) {
  const apiFunction = rotorFunction(scope, "ApiFunction", {
    handler: "functions/api.handler",
    description: "Rotor HTTP API",
    environment: cloudEnvironment(table, key),
    statements: [tableStatement(table, TABLE_READ_WRITE), keyStatement(key, KEY_ENVELOPE)],
    // HTTP APIs give up on an integration after 30 s.
    timeout: Duration.seconds(29),
    memorySize: 1024,
  });

  const api = new apigwv2.HttpApi(scope, "HttpApi", {
    description: "Rotor API",
    defaultIntegration: new HttpLambdaIntegration("ApiIntegration", apiFunction, {
      payloadFormatVersion: apigwv2.PayloadFormatVersion.VERSION_2_0,
    }),
  });
  const url = api.url;
  if (!url) throw new Error("HttpApi has no default stage");
  return { apiFunction, api, url };
}

/** What `use(Core)` returns to later stacks. */
export type CoreResources = ReturnType<typeof Core>;
