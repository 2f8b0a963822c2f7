import type { AgentSpec, AgentTransport } from "../agents/client.ts";

type HttpSpec = Extract<AgentSpec, { transport: "http" }>;

/**
 * HTTP agent transport (Cloud Run style): POSTs the compact JWS as the raw body. An agent's
 * protocol error may come with any status, so every JSON answer is returned for the client
 * to parse; a network failure, a timeout or a non-JSON answer throws (without the body).
 */
export class HttpAgentTransport implements AgentTransport {
  constructor(private readonly spec: Pick<HttpSpec, "url">, private readonly options: { timeoutMs?: number } = {}) {}

  async send(jws: string): Promise<unknown> {
    const res = await fetch(this.spec.url, {
      method: "POST",
      headers: { "content-type": "application/jose", accept: "application/json" },
      body: jws,
      signal: AbortSignal.timeout(this.options.timeoutMs ?? 15_000),
    });
    const text = await res.text();
    try {
      return JSON.parse(text);
    } catch {
      throw new Error(`agent answered HTTP ${res.status} with a body that is not JSON`);
    }
  }
}
