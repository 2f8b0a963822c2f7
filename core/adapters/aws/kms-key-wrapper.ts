import { DecryptCommand, GenerateDataKeyCommand, type KMSClient } from "@aws-sdk/client-kms";
import type { KeyWrapper } from "../../crypto/envelope.ts";

/** Cloud master key: KMS data keys, with the value's binding as the EncryptionContext. */
export class KmsKeyWrapper implements KeyWrapper {
  constructor(private readonly kms: KMSClient, private readonly keyId: string) {}

  async generateDataKey(context: Record<string, string>) {
    const out = await this.kms.send(new GenerateDataKeyCommand({ KeyId: this.keyId, KeySpec: "AES_256", EncryptionContext: context }));
    if (!out.Plaintext || !out.CiphertextBlob) throw new Error("KMS GenerateDataKey returned no key");
    return { plaintext: Buffer.from(out.Plaintext), wrapped: Buffer.from(out.CiphertextBlob) };
  }

  async unwrapDataKey(wrapped: Buffer, context: Record<string, string>) {
    const out = await this.kms.send(new DecryptCommand({ KeyId: this.keyId, CiphertextBlob: wrapped, EncryptionContext: context }));
    if (!out.Plaintext) throw new Error("KMS Decrypt returned no key");
    return Buffer.from(out.Plaintext);
  }
}
