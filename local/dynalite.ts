import { createRequire } from "node:module";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";

const require = createRequire(import.meta.url);

/** dynalite (the DynamoDB API in pure JS), in memory or on disk, listening on loopback. */
export async function startDynalite(opts: { path?: string } = {}): Promise<{ endpoint: string; stop: () => Promise<void> }> {
  const dynalite = require("dynalite") as (o: Record<string, unknown>) => Server;
  const server = dynalite({ path: opts.path, createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      }),
  };
}
