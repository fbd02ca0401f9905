// The keyed functions the codes are built from (docs/spec.md, "Notation"): HMAC-SHA256 and one
// AES-256 block, both through WebCrypto with non-extractable keys. One AES block is AES-CBC
// with a zero IV over the single block: the first 16 bytes of the output are AES(k, b).
import { invalidArgument } from './errors.js';

const subtle = () => globalThis.crypto.subtle;
const ZERO_IV = new Uint8Array(16);

/** HMAC-SHA256(key, message) with an HMAC CryptoKey; 32 bytes. */
export async function mac(key, message) {
  return new Uint8Array(await subtle().sign('HMAC', key, message));
}

/** AES-256 of one 16-byte block with an AES-CBC CryptoKey. */
export async function aesBlock(key, block) {
  if (!(block instanceof Uint8Array) || block.length !== 16) {
    throw invalidArgument('AES takes one 16-byte block');
  }
  const out = await subtle().encrypt({ name: 'AES-CBC', iv: ZERO_IV }, key, block);
  return new Uint8Array(out).slice(0, 16);
}

/** SHA-256 of `data`; 32 bytes. */
export async function sha256(data) {
  return new Uint8Array(await subtle().digest('SHA-256', data));
}
