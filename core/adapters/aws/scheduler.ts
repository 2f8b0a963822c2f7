import { createHash } from "node:crypto";
import {
  CreateScheduleCommand,
  DeleteScheduleCommand,
  UpdateScheduleCommand,
  type CreateScheduleCommandInput,
  type SchedulerClient,
} from "@aws-sdk/client-scheduler";
import type { RotationScheduler, SecretRef } from "../../rotation/model.ts";

export interface EventBridgeSchedulerOptions {
  client: SchedulerClient;
  groupName: string;
  /** The rotate state machine: the schedule's target. */
  stateMachineArn: string;
  /** The role EventBridge Scheduler assumes to call states:StartExecution. */
  roleArn: string;
  now?: () => Date;
}

/** A schedule name (≤ 64 of [0-9a-zA-Z-_.]): a readable prefix plus a hash of the exact ref. */
export function scheduleName(ref: SecretRef): string {
  const hash = createHash("sha256").update(JSON.stringify([ref.project, ref.config, ref.name])).digest("hex").slice(0, 12);
  const readable = `rotor.${ref.project}.${ref.config}.${ref.name}`.replace(/[^0-9a-zA-Z_.-]/g, "_").slice(0, 64 - 13);
  return `${readable}-${hash}`;
}

/**
 * Scheduler invokes with one-minute precision (anywhere in the minute), so the time is
 * rounded UP to a whole minute: a firing can be late, never before the flip is due.
 * A time already past (an overdue flip) becomes the next minute at least a minute away.
 */
export function atExpression(at: Date, now: Date): string {
  const earliest = Math.max(at.getTime(), now.getTime() + 60_000);
  const minute = Math.ceil(earliest / 60_000) * 60_000;
  return `at(${new Date(minute).toISOString().slice(0, 19)})`;
}

/** Cloud scheduling: one one-time schedule per rotated secret, moved after every flip. */
export class EventBridgeRotationScheduler implements RotationScheduler {
  constructor(private readonly options: EventBridgeSchedulerOptions) {}

  async scheduleNext(ref: SecretRef, at: Date): Promise<void> {
    const { client, groupName, stateMachineArn, roleArn, now = () => new Date() } = this.options;
    const input: CreateScheduleCommandInput = {
      Name: scheduleName(ref),
      GroupName: groupName,
      Description: `Rotor: next flip of ${ref.project}/${ref.config}/${ref.name}`.slice(0, 512),
      ScheduleExpression: atExpression(at, now()),
      ScheduleExpressionTimezone: "UTC",
      FlexibleTimeWindow: { Mode: "OFF" },
      ActionAfterCompletion: "NONE",
      State: "ENABLED",
      Target: {
        Arn: stateMachineArn,
        RoleArn: roleArn,
        Input: JSON.stringify({ ref: { project: ref.project, config: ref.config, name: ref.name }, force: false }),
        RetryPolicy: { MaximumEventAgeInSeconds: 3600, MaximumRetryAttempts: 20 },
      },
    };
    try {
      await client.send(new UpdateScheduleCommand(input));
    } catch (e) {
      if (errorName(e) !== "ResourceNotFoundException") throw e;
      try {
        await client.send(new CreateScheduleCommand(input));
      } catch (e2) {
        // Created concurrently since our update: ours is the latest time, write it.
        if (errorName(e2) !== "ConflictException") throw e2;
        await client.send(new UpdateScheduleCommand(input));
      }
    }
  }

  async remove(ref: SecretRef): Promise<void> {
    try {
      await this.options.client.send(new DeleteScheduleCommand({ Name: scheduleName(ref), GroupName: this.options.groupName }));
    } catch (e) {
      if (errorName(e) !== "ResourceNotFoundException") throw e;
    }
  }
}

const errorName = (e: unknown) => (e as { name?: string })?.name;
