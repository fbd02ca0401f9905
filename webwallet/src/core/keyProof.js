// Proof of possession of a new v3 device key at enrollment (docs/spec.md §6.1; the Python
// twin is shared/paycode/shared/key_proof.py). The device signs, with the new key,
//   field("paycode-v3-key-proof") | field(version) | field(public_key) | field(bound_to)
//   | field(idempotency_key),   field(x) = u16_be(len(x)) | x
// where bound_to is "session:" hex(SHA-256(token)) for POST /v1/wallet/devices and
// "device:" + the signing device's id for POST /v1/wallet/devices/rotate. Length prefixes keep
// two different tuples from ever giving one message.
// An offline allowance's keys (docs/offline.md §2.1) are proven the same way, one message per
// key i of the request (0..3):
//   field("paycode-offline-key-proof") | field(public_key) | field(device_id)
//   | field(idempotency_key) | field(u8(i))
import { b64encode, b64urlEncode, bytesToHex, concatBytes, u16, u8, utf8 } from './bytes.js';
import { invalidArgument } from './errors.js';
import { sha256 } from './prf.js';

export const KEY_PROOF_DOMAIN = 'paycode-v3-key-proof';
export const OFFLINE_KEY_PROOF_DOMAIN = 'paycode-offline-key-proof';
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

/** The exact bytes offline key `index` of an allowance request signs: bound to the device
 * that signs the request and to its Idempotency-Key, so a proof serves one request only. */
export function offlineKeyProofMessage(publicKeyRaw, deviceId, idempotencyKey, index) {
  if (!(publicKeyRaw instanceof Uint8Array) || publicKeyRaw.length !== 32) {
    throw invalidArgument('an offline public key is 32 bytes');
  }
  if (typeof deviceId !== 'string' || typeof idempotencyKey !== 'string') {
    throw invalidArgument('an offline key proof needs the device id and the Idempotency-Key');
  }
  const parts = [utf8(OFFLINE_KEY_PROOF_DOMAIN), publicKeyRaw, utf8(deviceId), utf8(idempotencyKey), u8(index)];
  return concatBytes(...parts.map(field));
}

/** The base64url proof of offline key `index`, signed by its `privateKey` (a CryptoKey). */
export async function makeOfflineKeyProof(privateKey, publicKeyRaw, deviceId, idempotencyKey, index) {
  const message = offlineKeyProofMessage(publicKeyRaw, deviceId, idempotencyKey, index);
  const signature = await globalThis.crypto.subtle.sign({ name: 'Ed25519' }, privateKey, message);
  return b64urlEncode(new Uint8Array(signature));
}
