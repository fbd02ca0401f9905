// Base32 of the v2 code (docs/spec.md §5): RFC 4648 alphabet A-Z 2-7, uppercase, no padding,
// so a QR code can use alphanumeric mode. Strict decoding: canonical text only.
import { invalidArgument } from './errors.js';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

export function base32Encode(data) {
  if (!(data instanceof Uint8Array)) throw invalidArgument('base32 encodes a Uint8Array');
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (const byte of data) {
    buffer = ((buffer << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += ALPHABET[(buffer >> bits) & 31];
    }
  }
  if (bits > 0) out += ALPHABET[(buffer << (5 - bits)) & 31];
  return out;
}

export function base32Decode(text) {
  if (typeof text !== 'string' || [1, 3, 6].includes(text.length % 8)) {
    throw invalidArgument('not unpadded base32 of whole bytes');
  }
  const out = new Uint8Array(Math.floor((text.length * 5) / 8));
  let buffer = 0;
  let bits = 0;
  let at = 0;
  for (let i = 0; i < text.length; i++) {
    const value = ALPHABET.indexOf(text[i]);
    if (value < 0) throw invalidArgument(`base32 character outside A-Z2-7 at ${i}`);
    buffer = ((buffer << 5) | value) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out[at++] = (buffer >> bits) & 0xff;
    }
  }
  if (bits > 0 && (buffer & ((1 << bits) - 1)) !== 0) {
    throw invalidArgument('base32 is not canonical (unused bits set)');
  }
  return out;
}
