import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";

/**
 * The master-key port: wraps and unwraps per-value data keys. Embedded mode keeps the
 * master key in a 0600 file; cloud mode uses KMS. The context is bound into the wrap
 * (KMS EncryptionContext / GCM associated data) so a wrapped key only opens for its value.
 */
export interface KeyWrapper {
  generateDataKey(context: Record<string, string>): Promise<{ plaintext: Buffer; wrapped: Buffer }>;
  unwrapDataKey(wrapped: Buffer, context: Record<string, string>): Promise<Buffer>;
}

/** What is stored: never the plaintext, never the unwrapped data key. */
export interface SealedValue {
  v: 1;
  key: string; // wrapped data key, base64
  iv: string;
  ct: string;
  tag: string;
}

/** Associated data: binds a ciphertext to where it belongs, so a copied item does not decrypt elsewhere. */
export function bindingFor(parts: Record<string, string | number>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of Object.keys(parts).sort()) out[k] = String(parts[k]);
  return out;
}

function aadOf(context: Record<string, string>): Buffer {
  return Buffer.from(JSON.stringify(Object.entries(context).sort(([a], [b]) => a.localeCompare(b))));
}

export function gcmEncrypt(key: Buffer, plaintext: Buffer, aad: Buffer) {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(aad);
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { iv, ct, tag: cipher.getAuthTag() };
}

export function gcmDecrypt(key: Buffer, iv: Buffer, ct: Buffer, tag: Buffer, aad: Buffer): Buffer {
  const decipher = createDecipheriv("aes-256-gcm", key, iv);
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(ct), decipher.final()]);
}

export class Envelope {
  constructor(private readonly wrapper: KeyWrapper) {}

  async seal(plaintext: string, context: Record<string, string>): Promise<SealedValue> {
    const { plaintext: dataKey, wrapped } = await this.wrapper.generateDataKey(context);
    try {
      const { iv, ct, tag } = gcmEncrypt(dataKey, Buffer.from(plaintext, "utf8"), aadOf(context));
      return { v: 1, key: wrapped.toString("base64"), iv: iv.toString("base64"), ct: ct.toString("base64"), tag: tag.toString("base64") };
    } finally {
      dataKey.fill(0);
    }
  }

  async open(sealed: SealedValue, context: Record<string, string>): Promise<string> {
    const dataKey = await this.wrapper.unwrapDataKey(Buffer.from(sealed.key, "base64"), context);
    try {
      return gcmDecrypt(
        dataKey,
        Buffer.from(sealed.iv, "base64"),
        Buffer.from(sealed.ct, "base64"),
        Buffer.from(sealed.tag, "base64"),
        aadOf(context),
      ).toString("utf8");
    } finally {
      dataKey.fill(0);
    }
  }
}

export { aadOf };
