import {
  ConditionalCheckFailedException,
  CreateTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  ResourceNotFoundException,
} from "@aws-sdk/client-dynamodb";
import {
  BatchWriteCommand,
  DeleteCommand,
  DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  QueryCommand,
  UpdateCommand,
  type QueryCommandInput,
} from "@aws-sdk/lib-dynamodb";

/**
 * The single table. Keys carry typed prefixes (PROJECT#, CONFIG#, SECRET#, TOKEN#...);
 * `gsi1` indexes "due" work by time. Every state change is one conditional write on one
 * item; nothing here uses transactions (dynalite has none, and they cost double).
 */
export interface Item {
  pk: string;
  sk: string;
  gsi1pk?: string;
  gsi1sk?: string;
  [k: string]: unknown;
}

export class ConditionFailed extends Error {
  constructor() {
    super("condition failed");
    this.name = "ConditionFailed";
  }
}

export const GSI1 = "gsi1";

export class Table {
  readonly doc: DynamoDBDocumentClient;
  constructor(readonly client: DynamoDBClient, readonly name: string) {
    this.doc = DynamoDBDocumentClient.from(client, { marshallOptions: { removeUndefinedValues: true } });
  }

  async get<T extends Item = Item>(pk: string, sk: string, consistent = true): Promise<T | undefined> {
    const out = await this.doc.send(new GetCommand({ TableName: this.name, Key: { pk, sk }, ConsistentRead: consistent }));
    return out.Item as T | undefined;
  }

  /** Put; with a condition, throws ConditionFailed when it does not hold. */
  async put(item: Item, condition?: { expression: string; names?: Record<string, string>; values?: Record<string, unknown> }) {
    await this.guard(() =>
      this.doc.send(
        new PutCommand({
          TableName: this.name,
          Item: item,
          ConditionExpression: condition?.expression,
          ExpressionAttributeNames: condition?.names,
          ExpressionAttributeValues: condition?.values,
        }),
      ),
    );
  }

  /**
   * Unconditional puts of many items, 25 per request (DynamoDB's limit), resending what the
   * service leaves unprocessed. For derived records only (execution history): a batch can't
   * carry a condition.
   */
  async batchPut(items: Item[]) {
    for (let i = 0; i < items.length; i += 25) {
      let requests: Record<string, unknown>[] | undefined = items.slice(i, i + 25).map((Item) => ({ PutRequest: { Item } }));
      for (let attempt = 0; requests?.length; attempt++) {
        if (attempt > 0) await new Promise((r) => setTimeout(r, Math.min(1000, 25 * 2 ** attempt)));
        const out = await this.doc.send(new BatchWriteCommand({ RequestItems: { [this.name]: requests as never } }));
        requests = out.UnprocessedItems?.[this.name] as Record<string, unknown>[] | undefined;
        if (attempt > 8 && requests?.length) throw new Error(`DynamoDB left ${requests.length} history items unprocessed after ${attempt} retries`);
      }
    }
  }

  /** Put unless the key exists; returns false when it did (idempotent derived writes). */
  async putIfAbsent(item: Item): Promise<boolean> {
    try {
      await this.put(item, { expression: "attribute_not_exists(pk)" });
      return true;
    } catch (e) {
      if (e instanceof ConditionFailed) return false;
      throw e;
    }
  }

  async update(
    pk: string,
    sk: string,
    update: { expression: string; condition?: string; names?: Record<string, string>; values?: Record<string, unknown> },
  ): Promise<Item> {
    const out = await this.guard(() =>
      this.doc.send(
        new UpdateCommand({
          TableName: this.name,
          Key: { pk, sk },
          UpdateExpression: update.expression,
          ConditionExpression: update.condition,
          ExpressionAttributeNames: update.names,
          ExpressionAttributeValues: update.values,
          ReturnValues: "ALL_NEW",
        }),
      ),
    );
    return out.Attributes as Item;
  }

  async delete(pk: string, sk: string, condition?: string, values?: Record<string, unknown>) {
    await this.guard(() =>
      this.doc.send(
        new DeleteCommand({ TableName: this.name, Key: { pk, sk }, ConditionExpression: condition, ExpressionAttributeValues: values }),
      ),
    );
  }

  /** All items of one partition whose sort key starts with a prefix, following pages. */
  async queryPrefix<T extends Item = Item>(pk: string, skPrefix: string, opts: { limit?: number; newestFirst?: boolean } = {}): Promise<T[]> {
    // DynamoDB refuses an empty begins_with operand (dynalite accepts it): no prefix, no condition.
    return this.queryAll<T>({
      KeyConditionExpression: skPrefix ? "pk = :pk AND begins_with(sk, :p)" : "pk = :pk",
      ExpressionAttributeValues: skPrefix ? { ":pk": pk, ":p": skPrefix } : { ":pk": pk },
      ConsistentRead: true,
      ScanIndexForward: !opts.newestFirst,
    }, opts.limit);
  }

  /** Up to `limit` items of one partition with sort keys below `before`, newest first (paging a log by key). */
  async queryBefore<T extends Item = Item>(pk: string, opts: { before?: string; limit: number }): Promise<T[]> {
    return this.queryAll<T>({
      KeyConditionExpression: opts.before !== undefined ? "pk = :pk AND sk < :before" : "pk = :pk",
      ExpressionAttributeValues: opts.before !== undefined ? { ":pk": pk, ":before": opts.before } : { ":pk": pk },
      ScanIndexForward: false,
      ConsistentRead: true,
    }, opts.limit);
  }

  /** Items of the due index under one key whose time is at or before `until`. */
  async queryDue<T extends Item = Item>(gsi1pk: string, until: string, limit = 100): Promise<T[]> {
    return this.queryAll<T>({
      IndexName: GSI1,
      KeyConditionExpression: "gsi1pk = :pk AND gsi1sk <= :until",
      ExpressionAttributeValues: { ":pk": gsi1pk, ":until": until },
    }, limit);
  }

  private async queryAll<T>(input: Omit<QueryCommandInput, "TableName">, limit?: number): Promise<T[]> {
    const items: T[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const out = await this.doc.send(
        new QueryCommand({ ...input, TableName: this.name, ExclusiveStartKey: start, Limit: limit ? limit - items.length : undefined }),
      );
      items.push(...((out.Items ?? []) as T[]));
      start = out.LastEvaluatedKey;
    } while (start && (!limit || items.length < limit));
    return items;
  }

  private async guard<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (e) {
      if (e instanceof ConditionalCheckFailedException || (e as Error)?.name === "ConditionalCheckFailedException") throw new ConditionFailed();
      throw e;
    }
  }

  /** Creates the table (embedded mode and tests; the cloud table comes from the stack). */
  async ensureExists() {
    try {
      await this.client.send(new DescribeTableCommand({ TableName: this.name }));
      return;
    } catch (e) {
      if (!(e instanceof ResourceNotFoundException) && (e as Error)?.name !== "ResourceNotFoundException") throw e;
    }
    await this.client.send(
      new CreateTableCommand({
        TableName: this.name,
        BillingMode: "PAY_PER_REQUEST",
        AttributeDefinitions: [
          { AttributeName: "pk", AttributeType: "S" },
          { AttributeName: "sk", AttributeType: "S" },
          { AttributeName: "gsi1pk", AttributeType: "S" },
          { AttributeName: "gsi1sk", AttributeType: "S" },
        ],
        KeySchema: [
          { AttributeName: "pk", KeyType: "HASH" },
          { AttributeName: "sk", KeyType: "RANGE" },
        ],
        GlobalSecondaryIndexes: [
          {
            IndexName: GSI1,
            KeySchema: [
              { AttributeName: "gsi1pk", KeyType: "HASH" },
              { AttributeName: "gsi1sk", KeyType: "RANGE" },
            ],
            Projection: { ProjectionType: "ALL" },
          },
        ],
      }),
    );
    for (let i = 0; i < 100; i++) {
      const out = await this.client.send(new DescribeTableCommand({ TableName: this.name }));
      if (out.Table?.TableStatus === "ACTIVE") return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`table ${this.name} did not become active`);
  }
}
