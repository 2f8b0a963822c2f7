/**
 * Helpers for reading synthesized templates in the infra tests: find resources, and render
 * CloudFormation values as plain strings so IAM statements compare exactly.
 */
import { expect } from "vitest";

export type Resource = { Type: string; Properties: Record<string, any>; DependsOn?: string[]; Condition?: string };
export type TemplateJson = {
  Resources: Record<string, Resource>;
  Parameters?: Record<string, any>;
  Outputs?: Record<string, any>;
  Conditions?: Record<string, any>;
  Rules?: Record<string, any>;
};

export const ACCOUNT = "123456789012";
export const REGION = "us-east-1";

const PSEUDO: Record<string, string> = {
  "AWS::Partition": "aws",
  "AWS::Region": REGION,
  "AWS::AccountId": ACCOUNT,
  "AWS::URLSuffix": "amazonaws.com",
};

/**
 * A CloudFormation value as one string: pseudo parameters resolved for the test account,
 * `{Ref: X}` → "{X}", `{Fn::GetAtt: [X, A]}` → "{X.A}", joins joined, select/split spelled out.
 */
export function render(value: unknown): string {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const [fn, arg] = Object.entries(value as Record<string, any>)[0] ?? [];
    if (fn === "Ref") return PSEUDO[arg] ?? `{${arg}}`;
    if (fn === "Fn::GetAtt") return `{${arg[0]}.${arg[1]}}`;
    if (fn === "Fn::Join") return (arg[1] as unknown[]).map(render).join(arg[0]);
    if (fn === "Fn::Select") return `${render(arg[1])}[${arg[0]}]`;
    if (fn === "Fn::Split") return `split(${render(arg[1])},"${arg[0]}")`;
  }
  throw new Error(`cannot render ${JSON.stringify(value)}`);
}

export interface Stmt {
  Effect: string;
  Action: string[];
  Resource: string[];
  Condition?: unknown;
}

/** A policy statement with actions and resources as sorted arrays of rendered strings. */
export function normalize(s: any): Stmt {
  expect(Object.keys(s).sort()).toEqual(expect.arrayContaining(["Action", "Effect", "Resource"]));
  expect(s.NotAction ?? s.NotResource ?? s.Principal, "no NotAction/NotResource/Principal").toBeUndefined();
  const out: Stmt = {
    Effect: s.Effect,
    Action: [s.Action].flat().map(render).sort(),
    Resource: [s.Resource].flat().map(render).sort(),
  };
  if (s.Condition) out.Condition = renderDeep(s.Condition);
  return out;
}

const isIntrinsic = (v: unknown) =>
  !!v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 1 && /^(Ref|Fn::)/.test(Object.keys(v)[0]!);

/** Renders every intrinsic inside a JSON value (conditions, environments). */
export function renderDeep(v: unknown): unknown {
  if (isIntrinsic(v)) return render(v);
  if (Array.isArray(v)) return v.map(renderDeep);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, renderDeep(x)]));
  return v;
}

export const sortStmts = (list: Stmt[]) => [...list].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));

export function findAll(t: TemplateJson, type: string, pred: (r: Resource) => boolean = () => true): Array<[string, Resource]> {
  return Object.entries(t.Resources).filter(([, r]) => r.Type === type && pred(r));
}

export function only(t: TemplateJson, type: string, pred?: (r: Resource) => boolean): [string, Resource] {
  const found = findAll(t, type, pred);
  expect(found.map(([id]) => id), `exactly one ${type}`).toHaveLength(1);
  return found[0]!;
}

/** Every statement any AWS::IAM::Policy attached to the role grants (inline Policies included). */
export function roleStatements(t: TemplateJson, roleId: string): Stmt[] {
  const role = t.Resources[roleId]!;
  const inline = (role.Properties.Policies ?? []).flatMap((p: any) => p.PolicyDocument.Statement);
  const attached = findAll(t, "AWS::IAM::Policy", (p) => (p.Properties.Roles ?? []).some((r: any) => r.Ref === roleId)).flatMap(
    ([, p]) => p.Properties.PolicyDocument.Statement,
  );
  return [...inline, ...attached].map(normalize);
}
