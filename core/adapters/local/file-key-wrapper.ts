import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { aadOf, gcmDecrypt, gcmEncrypt, type KeyWrapper } from "../../crypto/envelope.ts";

/** Embedded-mode master key: 32 random bytes in a 0600 file, created on first start. */
export class FileKeyWrapper implements KeyWrapper {
  private constructor(private readonly masterKey: Buffer) {}

  static openOrCreate(path: string): FileKeyWrapper {
    if (!existsSync(path)) {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      writeFileSync(path, randomBytes(32).toString("base64") + "\n", { mode: 0o600, flag: "wx" });
    }
    const key = Buffer.from(readFileSync(path, "utf8").trim(), "base64");
    if (key.length !== 32) throw new Error(`master key file ${path} is not a 32-byte base64 key`);
    return new FileKeyWrapper(key);
  }

  static fromKey(key: Buffer): FileKeyWrapper {
    return new FileKeyWrapper(key);
  }

  async generateDataKey(context: Record<string, string>) {
    const plaintext = randomBytes(32);
    const { iv, ct, tag } = gcmEncrypt(this.masterKey, plaintext, aadOf(context));
    return { plaintext, wrapped: Buffer.concat([iv, tag, ct]) };
  }

  async unwrapDataKey(wrapped: Buffer, context: Record<string, string>) {
    return gcmDecrypt(this.masterKey, wrapped.subarray(0, 12), wrapped.subarray(28), wrapped.subarray(12, 28), aadOf(context));
  }
}
