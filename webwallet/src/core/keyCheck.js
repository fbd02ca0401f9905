// Public keys the server hands the wallet, refused when weak (docs/spec.md §6.1; the Python
// twin is shared/paycode/shared/keycheck.py): an Ed25519 key (a QR-signing key) must be a
// canonical curve point (y < p, no "-0") of large order, else one fixed signature could verify
// every payload; an X25519 key (the grant's seal key) must be canonical (u < p) and not of low
// order, else every envelope sealed to it has an all-zero secret and hides nothing.
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { b64urlDecode, bytesToBigInt } from './bytes.js';
import { PaycodeError } from './errors.js';

const KEY_BYTES = 32;
const P = 2n ** 255n - 19n;

function weakKey(message) {
  return new PaycodeError('weak_key', message);
}

function sized(raw, what) {
  if (!(raw instanceof Uint8Array) || raw.length !== KEY_BYTES) throw weakKey(`an ${what} public key is ${KEY_BYTES} bytes`);
  return raw;
}

/** `raw` if it is a canonical Ed25519 point of large order; a `weak_key` error otherwise. */
export function checkEd25519Public(raw) {
  let point;
  try {
    point = ed25519.Point.fromBytes(sized(raw, 'Ed25519'), false); // strict: not ZIP-215
  } catch (error) {
    if (error instanceof PaycodeError) throw error;
    throw weakKey('the Ed25519 public key is not a canonical curve point');
  }
  if (point.isSmallOrder()) throw weakKey('the Ed25519 public key has small order');
  return raw;
}

/** `raw` if it is a canonical X25519 u-coordinate of large order; `weak_key` otherwise. */
export function checkX25519Public(raw) {
  if (bytesToBigInt(Uint8Array.from(sized(raw, 'X25519')).reverse()) >= P) {
    throw weakKey('the X25519 public key is not canonically encoded');
  }
  try {
    x25519.getSharedSecret(x25519.utils.randomSecretKey(), raw); // throws on an all-zero secret
  } catch {
    throw weakKey('the X25519 public key has low order');
  }
  return raw;
}

/** The server's QR keys [{key_id, public_key (base64url)}], each checked; `weak_key` if any
 * is weak (the list is refused whole, as the Python wallet does). */
export function checkQrKeys(keys) {
  if (!Array.isArray(keys)) throw weakKey('the server sent no list of QR keys');
  for (const key of keys) {
    let raw;
    try {
      raw = b64urlDecode(String(key?.public_key ?? ''));
    } catch {
      throw weakKey('a QR key is not base64url');
    }
    checkEd25519Public(raw);
  }
  return keys;
}
