// Version 1, the 24-digit numeric code (docs/spec.md §4):
//   tag    = int(HMAC(K_dev, "paycode-v1tag" | u64(handle) | u32(step) | u8(counter))[0:8])
//            mod 10^8
//   pad    = int(AES(K_hide, "pcv1pad:" | T)) mod 10^13           (T = tag, 8 ASCII digits)
//   plain  = handle * 1000 + (step mod 100) * 10 + counter
//   code   = "87" | T | (plain + pad) mod 10^13 as 13 digits | Damm check digit
// v1 has no flags, so it can never be merchant-bound (§10).
import { bytesToBigInt, concatBytes, u32, u64, u8, utf8 } from './bytes.js';
import { dammDigit } from './damm.js';
import { aesBlock, mac } from './prf.js';

export const PREFIX = '87';
export const LENGTH = 24;
export const HANDLE_BYTES = 5;
export const COUNTER_MAX = 9;
export const HANDLE_MODULUS = 10n ** 10n;
const TAG_MODULUS = 10n ** 8n;
const MASKED_MODULUS = 10n ** 13n;
const TAG_DOMAIN = utf8('paycode-v1tag');
const PAD_DOMAIN = utf8('pcv1pad:');

/** Whether `text` routes to v1: the prefix and ASCII digits only (as the Python codec). */
export function matches(text) {
  return text.startsWith(PREFIX) && /^[0-9]+$/.test(text);
}

/** The v1 code; arguments were checked by codes.js (handle < 10^10, counter <= 9, no flags). */
export async function generate(credential, step, counter) {
  const handle = bytesToBigInt(credential.handle);
  const message = concatBytes(TAG_DOMAIN, u64(handle), u32(step), u8(counter));
  const digest = await mac(credential.deviceKey, message);
  const tag = (bytesToBigInt(digest.subarray(0, 8)) % TAG_MODULUS).toString().padStart(8, '0');
  const block = await aesBlock(credential.hidingKey, concatBytes(PAD_DOMAIN, utf8(tag)));
  const pad = bytesToBigInt(block) % MASKED_MODULUS;
  const plain = handle * 1000n + BigInt(step % 100) * 10n + BigInt(counter);
  const masked = ((plain + pad) % MASKED_MODULUS).toString().padStart(13, '0');
  const body = PREFIX + tag + masked;
  const code = body + dammDigit(body);
  if (code.length !== LENGTH) throw new Error('v1 code has the wrong length');
  return code;
}
