import { createHmac, timingSafeEqual } from "node:crypto";

/**
 * The webhook signature: `X-Rotor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` where the
 * HMAC key is the webhook's secret (the whole `whsec_...` string, UTF-8) and the message is
 * `<t>.<raw request body>`. Binding the timestamp lets receivers refuse replays.
 */
export function signWebhook(secret: string, timestamp: number, body: string): string {
  const mac = createHmac("sha256", secret).update(`${timestamp}.${body}`, "utf8").digest("hex");
  return `t=${timestamp},v1=${mac}`;
}

// Everything below is the receiver's side, written to be copied as is (docs/events.md):
// it needs only node:crypto.

/**
 * Checks an `X-Rotor-Signature` header against the raw body (the exact bytes received,
 * before any JSON parsing). Returns false for a wrong secret, a changed body, a malformed
 * header, or a timestamp more than `toleranceSec` away from now (a replay).
 */
export function verifyRotorSignature(opts: { secret: string; body: string; header: string | undefined | null; toleranceSec?: number; nowSec?: number }): boolean {
  const parts = new Map<string, string[]>();
  for (const piece of (opts.header ?? "").split(",")) {
    const i = piece.indexOf("=");
    if (i <= 0) continue;
    const k = piece.slice(0, i).trim();
    parts.set(k, [...(parts.get(k) ?? []), piece.slice(i + 1).trim()]);
  }
  const t = Number(parts.get("t")?.[0]);
  if (!Number.isInteger(t)) return false;
  const now = opts.nowSec ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - t) > (opts.toleranceSec ?? 300)) return false;
  const expected = createHmac("sha256", opts.secret).update(`${t}.${opts.body}`, "utf8").digest();
  // Several v1 values may appear (e.g. while a secret is replaced); one match is enough.
  return (parts.get("v1") ?? []).some((hex) => {
    const given = Buffer.from(hex, "hex");
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}
