import { jwksOf, loadOrCreateSigningKey, signRequest, type SigningKey } from "../agent-protocol/keys.ts";
import type { UnsignedRequest } from "../agent-protocol/schemas.ts";
import type { RequestSigner } from "./client.ts";

/** Signs agent requests with Rotor's ES512 key and publishes the matching JWKS. */
export class KeySigner implements RequestSigner {
  constructor(private readonly key: SigningKey) {}

  static async fromFile(path: string) {
    return new KeySigner(await loadOrCreateSigningKey(path));
  }

  sign(request: UnsignedRequest) {
    return signRequest(this.key.privateKey, this.key.kid, request);
  }

  jwks() {
    return jwksOf(this.key.publicJwk);
  }
}
