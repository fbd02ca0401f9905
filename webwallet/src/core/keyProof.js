// Proof of possession of a new v3 device key at enrollment (docs/spec.md §6.1; the Python
// twin is shared/paycode/shared/key_proof.py). The device signs, with the new key,
//   field("paycode-v3-key-proof") | field(version) | field(public_key) | field(bound_to)
//   | field(idempotency_key),   field(x) = u16_be(len(x)) | x
// where bound_to is "session:" hex(SHA-256(token)) for POST /v1/wallet/devices and
// "device:" + the signing device's id for POST /v1/wallet/devices/rotate. Length prefixes keep
// two different tuples from ever giving one message.
import { b64encode, bytesToHex, concatBytes, u16, utf8 } from './bytes.js';
import { invalidArgument } from './errors.js';
import { sha256 } from './prf.js';

export const KEY_PROOF_DOMAIN = 'paycode-v3-key-proof';
const FIELD_BYTES_MAX = 0xffff;

function field(data) {
  if (data.length > FIELD_BYTES_MAX) throw invalidArgument('a key-proof field is too long');
  return concatBytes(u16(data.length), data);
}

/** What a password session's enrollment binds: the token's hash, never the token. */
export async function sessionScope(token, idempotencyKey) {
  return { boundTo: `session:${bytesToHex(await sha256(utf8(token)))}`, idempotencyKey };
}

/** What a rotation signed by an enrolled device binds: that device. */
export function deviceScope(deviceId, idempotencyKey) {
  return { boundTo: `device:${deviceId}`, idempotencyKey };
}

/** The exact bytes the new key signs. */
export function keyProofMessage(version, publicKeyRaw, scope) {
  if (!(publicKeyRaw instanceof Uint8Array) || publicKeyRaw.length !== 32) {
    throw invalidArgument('a v3 public key is 32 bytes');
  }
  if (typeof scope?.boundTo !== 'string' || typeof scope?.idempotencyKey !== 'string') {
    throw invalidArgument('a key proof needs what it is bound to and the Idempotency-Key');
  }
  const parts = [utf8(KEY_PROOF_DOMAIN), utf8(version), publicKeyRaw, utf8(scope.boundTo), utf8(scope.idempotencyKey)];
  return concatBytes(...parts.map(field));
}

/** The base64 proof: the Ed25519 signature of the message by `privateKey` (a CryptoKey). */
export async function makeKeyProof(privateKey, version, publicKeyRaw, scope) {
  const message = keyProofMessage(version, publicKeyRaw, scope);
  const signature = await globalThis.crypto.subtle.sign({ name: 'Ed25519' }, privateKey, message);
  return b64encode(new Uint8Array(signature));
}
