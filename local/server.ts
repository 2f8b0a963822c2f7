import { serve, type ServerType } from "@hono/node-server";
import type { AddressInfo } from "node:net";

export interface ApiServer {
  url: string;
  close(): Promise<void>;
}

/**
 * Serves the hono app on a Node HTTP server: embedded mode's counterpart of the API
 * Gateway + `functions/api.ts` pair. Same app, same routes; only the transport differs.
 */
export async function serveApi(app: { fetch: (request: Request) => Response | Promise<Response> }, opts: { port: number; host?: string }): Promise<ApiServer> {
  const host = opts.host ?? "127.0.0.1";
  const server: ServerType = await new Promise((resolveServer, reject) => {
    const s = serve({ fetch: app.fetch, port: opts.port, hostname: host }, () => resolveServer(s));
    s.once("error", reject);
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    close: () =>
      new Promise<void>((resolveClose) => {
        server.close(() => resolveClose());
        // Keep-alive connections would hold close() open until their clients leave.
        (server as { closeAllConnections?: () => void }).closeAllConnections?.();
      }),
  };
}
