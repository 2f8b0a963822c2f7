import { EventEmitter } from "node:events";
import { createRequire } from "node:module";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";

const require = createRequire(import.meta.url);

/** The parts of a smithy HttpRequest this handler reads. */
interface SdkRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string | Uint8Array;
}

export interface RunningDynalite {
  /** dynalite's loopback listener; the in-process client only needs it as its nominal endpoint. */
  endpoint: string;
  /** A request handler for DynamoDBClient that calls dynalite in this process. */
  requestHandler: InProcessHandler;
  /** A signer for that client: dynalite checks that a request is signed, not the signature. */
  signer: { sign: <R extends SdkRequest>(request: R) => Promise<R> };
  stop: () => Promise<void>;
}

type InProcessHandler = ReturnType<typeof inProcessHandler>;

/**
 * dynalite (the DynamoDB API in pure JS), in memory or on disk. Rotor's own client reaches
 * it in process: the same DynamoDB JSON requests and the same dynalite code, without a
 * socket, HTTP parsing or SigV4 hashing on both ends, which were half the cost of each
 * store call (see `npm run bench`).
 */
export async function startDynalite(opts: { path?: string } = {}): Promise<RunningDynalite> {
  const dynalite = require("dynalite") as (o: Record<string, unknown>) => Server;
  const server = dynalite({ path: opts.path, createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  // dynalite's close() closes its LevelDB only on a server that is listening.
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requestHandler: inProcessHandler(server),
    signer: { sign: async (request) => Object.assign(request, { headers: { ...request.headers, ...LOCAL_AUTH } }) },
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      }),
  };
}

const LOCAL_AUTH = {
  authorization: "AWS4-HMAC-SHA256 Credential=local/20200101/local/dynamodb/aws4_request, SignedHeaders=host, Signature=local",
  "x-amz-date": "20200101T000000Z",
};

// The SDK's JSON body is a Uint8Array whose valueOf() is its text (and warns when called):
// wrap its bytes rather than let Buffer.from() take that path.
const asBuffer = (body: string | Uint8Array) =>
  typeof body === "string" ? Buffer.from(body) : Buffer.from(body.buffer, body.byteOffset, body.byteLength);

/**
 * Hands a request to dynalite's HTTP listener with a minimal request and response: the
 * listener reads method, url, headers and the body events, and answers with setHeader and end.
 */
function inProcessHandler(server: Server) {
  return {
    metadata: { handlerProtocol: "dynalite/in-process" },
    handle(request: SdkRequest): Promise<{ response: { statusCode: number; headers: Record<string, string>; body: Uint8Array } }> {
      return new Promise((resolve, reject) => {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(request.headers)) headers[k.toLowerCase()] = v;
        const req = Object.assign(new EventEmitter(), { method: request.method, url: request.path || "/", headers });
        const answer: Record<string, string> = {};
        const res = {
          statusCode: 200,
          setHeader: (name: string, value: unknown) => void (answer[name.toLowerCase()] = String(value)),
          end: (data?: string | Uint8Array) => resolve({ response: { statusCode: res.statusCode, headers: answer, body: Buffer.from(data ?? "") } }),
        };
        try {
          server.emit("request", req, res);
          if (request.body?.length) req.emit("data", asBuffer(request.body));
          req.emit("end");
        } catch (e) {
          reject(e);
        }
      });
    },
    updateHttpClientConfig: () => {},
    httpHandlerConfigs: () => ({}),
    destroy: () => {},
  };
}
