import { randomInt } from "node:crypto";

// Letters and digits only: valid in every engine's literal syntax and in URLs, no escaping surprises.
const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** 32 characters from 62: about 190 bits, from the OS CSPRNG. */
export function generatePassword(length = 32): string {
  let out = "";
  for (let i = 0; i < length; i++) out += ALPHABET[randomInt(ALPHABET.length)];
  return out;
}
