// Version 2, the symmetric QR code (docs/spec.md §5):
//   tag    = HMAC(K_dev, "paycode-v2tag" | plain [| binding])[0:10]           80 bits
//   masked = plain XOR AES(K_hide[v2], "pcv2pd" | tag)[0:15]
//   code   = "PC2" | base32(tag | masked)                                     43 characters
// `binding` (32 bytes, §10) is in the MAC only when flags has MERCHANT_BOUND.
import { base32Encode } from './base32.js';
import { concatBytes, utf8 } from './bytes.js';
import * as plaintext from './plaintext.js';
import { aesBlock, mac } from './prf.js';

export const PREFIX = 'PC2';
export const LENGTH = 43;
export const TAG_BYTES = 10;
const TAG_DOMAIN = utf8('paycode-v2tag');
const PAD_DOMAIN = utf8('pcv2pd');

export function matches(text) {
  return text.startsWith(PREFIX);
}

/** The v2 code; arguments were checked by codes.js. `binding` is empty when unbound. */
export async function generate(credential, step, counter, flags, binding) {
  const plain = plaintext.pack(credential.handle, step, counter, flags);
  const digest = await mac(credential.deviceKey, concatBytes(TAG_DOMAIN, plain, binding));
  const tag = digest.slice(0, TAG_BYTES);
  const pad = await aesBlock(credential.hidingKey, concatBytes(PAD_DOMAIN, tag));
  const masked = plain.map((byte, i) => byte ^ pad[i]);
  const code = PREFIX + base32Encode(concatBytes(tag, masked));
  if (code.length !== LENGTH) throw new Error('v2 code has the wrong length');
  return code;
}
