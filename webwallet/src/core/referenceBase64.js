// The base64url reading of the reference's merchant QR signature (docs/spec.md §12), so the
// wallet's verdict on a payload is the server's. The reference pads the text to a multiple of
// four with "=" and decodes without validation (Python's urlsafe_b64decode): characters
// outside the alphabet are skipped, "+" and "/" count like "-" and "_", the unused low bits of
// the last character are ignored, and decoding stops at the first complete padding. Non-ASCII
// text, a lone trailing character or a short final group decode to nothing (null). The
// signature bytes still have to verify, so this leniency lets no altered payload through; the
// strict decoder for everything else is bytes.b64urlDecode.

const VALUES = new Int8Array(128).fill(-1);
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
for (let i = 0; i < 64; i++) VALUES[ALPHABET.charCodeAt(i)] = i;
VALUES['-'.charCodeAt(0)] = 62;
VALUES['_'.charCodeAt(0)] = 63;

/** The bytes the reference reads from unpadded base64url `text`, or null where it fails. */
export function referenceB64urlDecode(text) {
  if (!/^[\x00-\x7f]*$/.test(text)) return null;
  const padded = text + '='.repeat((4 - (text.length % 4)) % 4);
  const out = [];
  let quad = 0;
  let left = 0;
  let pads = 0;
  for (const char of padded) {
    if (char === '=') {
      if (quad >= 2 && quad + ++pads >= 4) return Uint8Array.from(out);
      continue;
    }
    const value = VALUES[char.charCodeAt(0)];
    if (value < 0) continue;
    pads = 0;
    if (quad === 1) out.push(((left << 2) | (value >> 4)) & 0xff);
    else if (quad === 2) out.push(((left << 4) | (value >> 2)) & 0xff);
    else if (quad === 3) out.push(((left << 6) | value) & 0xff);
    left = quad === 0 ? value : value & (quad === 1 ? 0x0f : quad === 2 ? 0x03 : 0);
    quad = (quad + 1) % 4;
  }
  return quad === 0 ? Uint8Array.from(out) : null;
}
