import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { taskFunctions } from "../../functions/registry.ts";
import { REPO_ROOT } from "../support/embedded.ts";

const require = createRequire(import.meta.url);
const validate = require("asl-validator") as (definition: unknown, opts?: { checkPaths?: boolean; checkArn?: boolean }) => { isValid: boolean; errorsText: (sep?: string) => string };

const dir = join(REPO_ROOT, "statemachines");
const files = readdirSync(dir).filter((f) => f.endsWith(".asl.json"));

type State = { Type: string; Resource?: string; Retry?: Array<{ BackoffRate?: number; MaxAttempts?: number }>; QueryLanguage?: string; Assign?: unknown };
const statesOf = (definition: { States: Record<string, State & { Branches?: Array<{ States: Record<string, State> }> }> }): State[] =>
  Object.values(definition.States).flatMap((s) => [s, ...(s.Branches ?? []).flatMap((b) => Object.values(b.States))]);

// As the stack does it: each `${XxxFunctionArn}` becomes a Lambda ARN (definitionSubstitutions).
const substituted = (text: string) => text.replace(/\$\{(\w+FunctionArn)\}/g, (_, name: string) => `arn:aws:lambda:eu-west-1:123456789012:function:rotor-test-${name.replace(/FunctionArn$/, "")}`);

describe("statemachines/*.asl.json", () => {
  it("holds the rotate and lease workflows", () => {
    expect(files.sort()).toEqual(["lease.asl.json", "rotate.asl.json"]);
  });

  describe.each(files)("%s", (file) => {
    const text = readFileSync(join(dir, file), "utf8");

    it("passes asl-validator with its Lambda ARNs substituted", () => {
      const result = validate(JSON.parse(substituted(text)));
      expect(result.errorsText("\n")).toBe("");
      expect(result.isValid).toBe(true);
    });

    it("would fail the validator with a transition to a missing state (the check is live)", () => {
      const definition = JSON.parse(substituted(text));
      const withNext = Object.values(definition.States as Record<string, { Next?: string }>).find((s) => s.Next)!;
      withNext.Next = "NoSuchState";
      expect(validate(definition).isValid).toBe(false);
    });

    it("uses JSONPath only (what aws-local-stepfunctions runs) and names only registered task functions", () => {
      const definition = JSON.parse(text);
      expect(definition.QueryLanguage ?? "JSONPath").toBe("JSONPath");
      for (const state of statesOf(definition)) {
        expect(state.QueryLanguage ?? "JSONPath").toBe("JSONPath");
        expect(state.Assign).toBeUndefined();
        if (state.Type !== "Task") continue;
        const placeholder = /^\$\{(\w+FunctionArn)\}$/.exec(state.Resource ?? "")?.[1];
        expect(placeholder, `${state.Resource} is not a \${…FunctionArn} placeholder`).toBeDefined();
        expect(Object.keys(taskFunctions)).toContain(placeholder);
      }
    });

    it("retries its tasks with exponential backoff", () => {
      const tasks = statesOf(JSON.parse(text)).filter((s) => s.Type === "Task");
      expect(tasks.length).toBeGreaterThan(0);
      for (const task of tasks) expect(task.Retry?.some((r) => (r.BackoffRate ?? 2) > 1 && (r.MaxAttempts ?? 3) > 0)).toBe(true);
    });
  });
});
