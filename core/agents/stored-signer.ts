import type { JWK } from "jose";
import { generateSigningKey, importSigningKey } from "../agent-protocol/keys.ts";
import type { Deps } from "../context.ts";
import { bindingFor, type SealedValue } from "../crypto/envelope.ts";
import { KeySigner } from "./signer.ts";

const KEY = { pk: "SIGNINGKEY", sk: "CURRENT" };
const binding = bindingFor({ purpose: "agent-signing-key" });

/**
 * Cloud mode's signing key: the private JWK sealed with the KMS envelope in the table,
 * created on first use by whichever Lambda gets there first (conditional put).
 */
export async function storedSigner(deps: Pick<Deps, "table" | "envelope">): Promise<KeySigner> {
  let item = await deps.table.get(KEY.pk, KEY.sk);
  if (!item) {
    const { privateJwk } = await generateSigningKey();
    const sealed = await deps.envelope.seal(JSON.stringify(privateJwk), binding);
    await deps.table.putIfAbsent({ ...KEY, kind: "signing-key", sealed, createdAt: new Date().toISOString() });
    item = await deps.table.get(KEY.pk, KEY.sk);
  }
  const jwk = JSON.parse(await deps.envelope.open(item!.sealed as SealedValue, binding)) as JWK;
  return new KeySigner(await importSigningKey(jwk));
}
