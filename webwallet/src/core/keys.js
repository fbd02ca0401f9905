// Key material as non-extractable WebCrypto CryptoKeys (docs/spec.md §1, §7). The app never
// holds raw secrets after enrollment: these helpers import the bytes a grant carries (or make
// the v3 key pair on the device) and the rest of the core takes the CryptoKeys.
//   device key K_dev      -> HMAC-SHA256 key (sign), for the v1/v2 tag
//   wallet API key        -> HMAC-SHA256 key of HMAC(K_dev, "paycode-wallet-api-key") (§7)
//   hiding key K_hide[v]  -> AES-256 key (AES-CBC, encrypt), one block with a zero IV = AES(k, b)
//   device signing key    -> Ed25519 private key (sign); its public half goes to the server
import { concatBytes, hexToBytes, utf8, wipe } from './bytes.js';
import { invalidArgument } from './errors.js';

const subtle = () => globalThis.crypto.subtle;
const KEY_BYTES = 32;
const API_KEY_LABEL = utf8('paycode-wallet-api-key');
const PKCS8_ED25519_PREFIX = hexToBytes('302e020100300506032b657004220420');
const HMAC = { name: 'HMAC', hash: 'SHA-256' };

function key32(raw, what) {
  if (!(raw instanceof Uint8Array) || raw.length !== KEY_BYTES) {
    throw invalidArgument(`${what} must be ${KEY_BYTES} bytes`);
  }
  return raw;
}

/** An HMAC-SHA256 signing key (non-extractable) for 32 raw bytes. */
export async function importHmacKey(raw, what = 'HMAC key') {
  return subtle().importKey('raw', key32(raw, what), HMAC, false, ['sign']);
}

/** The version's hiding key: AES-256 for one-block encryption (AES-CBC, zero IV). */
export async function importHidingKey(raw) {
  return subtle().importKey('raw', key32(raw, 'hiding key'), { name: 'AES-CBC' }, false, [
    'encrypt',
  ]);
}

/** A v1/v2 grant's keys: {deviceKey, apiKey, hidingKey}, all non-extractable. */
export async function importSymmetricDevice(deviceKeyRaw, hidingKeyRaw) {
  key32(deviceKeyRaw, 'device key');
  key32(hidingKeyRaw, 'hiding key');
  const deviceKey = await importHmacKey(deviceKeyRaw, 'device key');
  // A throwaway key derives the API key, so the device key's own usages stay as narrow as
  // possible; the derived bytes are imported at once and wiped.
  const throwaway = await importHmacKey(deviceKeyRaw, 'device key');
  const apiRaw = new Uint8Array(await subtle().sign('HMAC', throwaway, API_KEY_LABEL));
  try {
    const apiKey = await importHmacKey(apiRaw, 'API key');
    const hidingKey = await importHidingKey(hidingKeyRaw);
    return { deviceKey, apiKey, hidingKey };
  } finally {
    wipe(apiRaw);
  }
}

/** A new v3 device key pair made on the device: the private key never leaves it. */
export async function generateSigningKey() {
  const pair = await subtle().generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
  const publicKeyRaw = new Uint8Array(await subtle().exportKey('raw', pair.publicKey));
  return { privateKey: pair.privateKey, publicKeyRaw };
}

/** An Ed25519 private key from its 32-byte seed (RFC 8032), for tests and vectors. */
export async function importEd25519Seed(seed32, { extractable = false } = {}) {
  const pkcs8 = concatBytes(PKCS8_ED25519_PREFIX, key32(seed32, 'Ed25519 seed'));
  try {
    return await subtle().importKey('pkcs8', pkcs8, { name: 'Ed25519' }, extractable, ['sign']);
  } finally {
    wipe(pkcs8);
  }
}

/** An Ed25519 public key (32 raw bytes) for verification. */
export async function importEd25519Public(raw32) {
  return subtle().importKey('raw', key32(raw32, 'Ed25519 public key'), { name: 'Ed25519' }, true, [
    'verify',
  ]);
}
