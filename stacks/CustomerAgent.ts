import { Aws, CfnCondition, CfnOutput, CfnParameter, CfnRule, DefaultStackSynthesizer, Fn, Stack, Tags, type StackProps } from "aws-cdk-lib";
import * as iam from "aws-cdk-lib/aws-iam";
import * as lambda from "aws-cdk-lib/aws-lambda";
import * as logs from "aws-cdk-lib/aws-logs";
import { Construct } from "constructs";

/**
 * What a customer deploys in THEIR account so Rotor can rotate their database credentials
 * without ever connecting to the database itself (DESIGN.md "Agents"):
 *  - the agent Lambda `Rotor_<engine>` (functions/agents/<engine>.ts) in their VPC, which
 *    checks every request's ES512 signature against Rotor's JWKS;
 *  - its execution role (VPC networking and its own logs);
 *  - the role Rotor assumes: trusted by Rotor's account only with the customer's
 *    ExternalId, allowed to invoke and describe that one function (and, if the customer
 *    opts in, to update its code) and nothing else.
 * Every value may be a token, so the same construct backs the parameterized template
 * (CustomerAgentStack) and a customer's own CDK app.
 */
export interface CustomerAgentProps {
  /** "postgres" | "mysql" (or a parameter holding one). */
  engine: string;
  /** The AWS account Rotor runs in (Rotor's `RotorAccountId` output). */
  rotorAccountId: string;
  /** Rotor's `AgentExternalId` output. */
  externalId: string;
  /** Rotor's `JwksUrl` output: where the agent fetches the keys requests are signed with. */
  jwksUrl: string;
  subnetIds: string[];
  securityGroupIds: string[];
  /** The agent bundle (dist/agents/rotor-agent-<engine>.zip) uploaded to an S3 bucket in the same region. */
  code: { bucket: string; key: string };
  /** Also let Rotor call lambda:UpdateFunctionCode on the agent: `true`, or only under a condition. */
  allowCodeUpdates?: boolean | CfnCondition;
  /** Days; default 30. */
  logRetentionDays?: number;
}

export class CustomerAgent extends Construct {
  readonly function: lambda.CfnFunction;
  readonly executionRole: iam.Role;
  /** The role Rotor assumes: give its ARN to Rotor with the function's ARN. */
  readonly rotorRole: iam.Role;
  readonly functionName: string;

  constructor(scope: Construct, id: string, props: CustomerAgentProps) {
    super(scope, id);
    // Rotor refuses to invoke any function whose name lacks this prefix.
    this.functionName = `Rotor_${props.engine}`;

    const logGroup = new logs.CfnLogGroup(this, "Logs", {
      logGroupName: `/aws/lambda/${this.functionName}`,
      retentionInDays: props.logRetentionDays ?? 30,
    });

    // AWS's managed policy for VPC functions: ENI management and logs. Both need "*":
    // ENIs don't exist before the function does, and the policy is AWS's.
    this.executionRole = new iam.Role(this, "ExecutionRole", {
      description: "Rotor agent: runs in the VPC, reaches the database",
      assumedBy: new iam.ServicePrincipal("lambda.amazonaws.com"),
      managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName("service-role/AWSLambdaVPCAccessExecutionRole")],
    });

    this.function = new lambda.CfnFunction(this, "Function", {
      functionName: this.functionName,
      description: "Rotor agent: changes and tests database credentials on Rotor's signed requests",
      runtime: "nodejs20.x",
      architectures: ["arm64"],
      handler: "index.handler",
      role: this.executionRole.roleArn,
      code: { s3Bucket: props.code.bucket, s3Key: props.code.key },
      timeout: 30,
      memorySize: 256,
      environment: {
        variables: {
          ROTOR_JWKS_URL: props.jwksUrl,
          // Amazon's CAs (RDS and Aurora included) ship with the runtime but are not trusted by
          // default on Node 20: without this, `ssl: true` to RDS fails certificate checks.
          NODE_EXTRA_CA_CERTS: "/var/runtime/ca-cert.pem",
        },
      },
      vpcConfig: { subnetIds: props.subnetIds, securityGroupIds: props.securityGroupIds },
      loggingConfig: { logGroup: logGroup.ref },
    });
    this.function.addDependency(this.executionRole.node.defaultChild as iam.CfnRole);

    const functionArn = this.function.attrArn;
    this.rotorRole = new iam.Role(this, "RotorRole", {
      // Rotor may only assume roles named Rotor* (its own IAM policy says so).
      roleName: `Rotor_${props.engine}_${Aws.REGION}`,
      description: "Assumed by Rotor (with the ExternalId) to invoke the Rotor agent",
      assumedBy: new iam.AccountPrincipal(props.rotorAccountId).withConditions({
        StringEquals: { "sts:ExternalId": props.externalId },
      }),
      inlinePolicies: {
        InvokeAgent: new iam.PolicyDocument({
          statements: [new iam.PolicyStatement({ actions: ["lambda:InvokeFunction", "lambda:GetFunction"], resources: [functionArn] })],
        }),
      },
    });

    if (props.allowCodeUpdates) {
      const update = new iam.Policy(this, "UpdateCodePolicy", {
        roles: [this.rotorRole],
        statements: [new iam.PolicyStatement({ actions: ["lambda:UpdateFunctionCode"], resources: [functionArn] })],
      });
      if (props.allowCodeUpdates instanceof CfnCondition) {
        (update.node.defaultChild as iam.CfnPolicy).cfnOptions.condition = props.allowCodeUpdates;
      }
    }
  }
}

/** CloudFormation parameter names of the customer template (docs/customer-agent.md). */
export const CUSTOMER_PARAMETERS = [
  "Engine",
  "RotorAccountId",
  "ExternalId",
  "JwksUrl",
  "VpcId",
  "SubnetIds",
  "SecurityGroupIds",
  "AgentCodeBucket",
  "AgentCodeKey",
  "AllowCodeUpdates",
  "LogRetentionDays",
] as const;

const RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

/**
 * The customer-side template: a plain CDK stack (not SST's, whose stacks add a custom
 * resource Lambda whose code lives in Rotor's bootstrap bucket) with no assets and no
 * bootstrap version check, so it deploys with plain CloudFormation in any account:
 * `npm run synth` writes it to docs/customer-agent.template.json.
 */
export class CustomerAgentStack extends Stack {
  readonly agent: CustomerAgent;

  constructor(scope: Construct, id: string, props: StackProps = {}) {
    super(scope, id, {
      description: "Rotor agent for one database engine: the Rotor_<engine> Lambda and the role Rotor assumes to invoke it",
      ...props,
      synthesizer: new DefaultStackSynthesizer({ generateBootstrapVersionRule: false }),
    });
    // The template is the same for every Rotor stage: drop the SST app/stage tags.
    Tags.of(this).remove("sst:app");
    Tags.of(this).remove("sst:stage");

    const p = (name: (typeof CUSTOMER_PARAMETERS)[number], options: ConstructorParameters<typeof CfnParameter>[2]) =>
      new CfnParameter(this, name, options);
    const engine = p("Engine", { type: "String", allowedValues: ["postgres", "mysql"], description: "Database engine: the function is named Rotor_<engine>." });
    const rotorAccountId = p("RotorAccountId", {
      type: "String",
      allowedPattern: "^\\d{12}$",
      description: "The AWS account Rotor runs in (Rotor's RotorAccountId output).",
    });
    const externalId = p("ExternalId", {
      type: "String",
      minLength: 2,
      maxLength: 1224,
      allowedPattern: "^[\\w+=,.@:/-]+$",
      description: "Rotor's AgentExternalId output. Rotor must present it to assume the role.",
    });
    const jwksUrl = p("JwksUrl", {
      type: "String",
      allowedPattern: "^https://\\S+$",
      description: "Rotor's JwksUrl output (https://…/.well-known/jwks.json): the keys Rotor signs requests with.",
    });
    const vpcId = p("VpcId", { type: "AWS::EC2::VPC::Id", description: "The VPC the database is reachable from." });
    const subnetIds = p("SubnetIds", {
      type: "List<AWS::EC2::Subnet::Id>",
      description: "Private subnets of that VPC for the agent (with a route to the JWKS URL, e.g. a NAT gateway).",
    });
    const securityGroupIds = p("SecurityGroupIds", {
      type: "List<AWS::EC2::SecurityGroup::Id>",
      description: "Security groups for the agent; the database's security group must admit them.",
    });
    const codeBucket = p("AgentCodeBucket", { type: "String", minLength: 3, description: "S3 bucket (same region) holding the agent bundle." });
    const codeKey = p("AgentCodeKey", { type: "String", minLength: 1, description: "S3 key of the agent bundle, e.g. rotor-agent-postgres.zip." });
    const allowUpdates = p("AllowCodeUpdates", {
      type: "String",
      allowedValues: ["false", "true"],
      default: "false",
      description: "Let Rotor update the agent's code (lambda:UpdateFunctionCode on this function only).",
    });
    const retention = p("LogRetentionDays", { type: "Number", default: 30, allowedValues: RETENTION_DAYS.map(String), description: "Days to keep the agent's logs." });

    new CfnRule(this, "SubnetsInVpc", {
      assertions: [
        {
          assert: Fn.conditionEachMemberEquals(Fn.valueOfAll("AWS::EC2::Subnet::Id", "VpcId"), vpcId.valueAsString),
          assertDescription: "All SubnetIds must belong to VpcId.",
        },
      ],
    });
    const updatesAllowed = new CfnCondition(this, "CodeUpdatesAllowed", { expression: Fn.conditionEquals(allowUpdates.valueAsString, "true") });

    this.agent = new CustomerAgent(this, "Agent", {
      engine: engine.valueAsString,
      rotorAccountId: rotorAccountId.valueAsString,
      externalId: externalId.valueAsString,
      jwksUrl: jwksUrl.valueAsString,
      subnetIds: subnetIds.valueAsList,
      securityGroupIds: securityGroupIds.valueAsList,
      code: { bucket: codeBucket.valueAsString, key: codeKey.valueAsString },
      allowCodeUpdates: updatesAllowed,
      logRetentionDays: retention.valueAsNumber,
    });

    new CfnOutput(this, "AgentFunctionArn", { value: this.agent.function.attrArn, description: "Give Rotor this as agent.functionArn." });
    new CfnOutput(this, "AgentRoleArn", { value: this.agent.rotorRole.roleArn, description: "Give Rotor this as agent.roleArn." });
    new CfnOutput(this, "AgentRegion", { value: Aws.REGION, description: "Give Rotor this as agent.region." });
  }
}
