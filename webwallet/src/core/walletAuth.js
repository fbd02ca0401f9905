// Signed wallet requests (docs/api.md, "Wallet request signing"; docs/spec.md §7). The signed
// message is the UTF-8 of
//   "paycode-wallet-1" \n METHOD \n path-with-query \n timestamp \n nonce \n hex(SHA-256(body))
// signed with the API key HMAC(K_dev, "paycode-wallet-api-key") for v1/v2 devices (the
// credential's `apiKey` from keys.importSymmetricDevice) and with the device's Ed25519 key
// (`signingKey`) for v3 devices. The signature travels as standard base64.
import { b64encode, bytesToHex, utf8 } from './bytes.js';
import { invalidArgument } from './errors.js';
import { mac, sha256 } from './prf.js';

export const SCHEME = 'paycode-wallet-1';
export const TIMESTAMP_SKEW_S_MAX = 300;
const NONCE_BYTES = 16;

function bodyBytes(body) {
  if (body === null || body === undefined) return new Uint8Array(0);
  if (typeof body === 'string') return utf8(body);
  if (body instanceof Uint8Array) return body;
  throw invalidArgument('a request body is bytes, a string or null');
}

/**
 * The exact bytes a request signs. Async: the body digest is WebCrypto's SHA-256.
 * `timestampS` is integer Unix seconds; `bodyBytes` a Uint8Array (a string is UTF-8 encoded,
 * null is the empty body).
 */
export async function signingMessage(method, path, timestampS, nonce, body) {
  if (typeof method !== 'string' || !method) throw invalidArgument('method must be a string');
  if (typeof path !== 'string' || !path.startsWith('/')) {
    throw invalidArgument('path must start with /');
  }
  if (!Number.isSafeInteger(timestampS)) throw invalidArgument('timestamp must be an integer');
  if (typeof nonce !== 'string' || nonce.includes('\n')) throw invalidArgument('bad nonce');
  const digest = bytesToHex(await sha256(bodyBytes(body)));
  const lines = [SCHEME, method.toUpperCase(), path, String(timestampS), nonce, digest];
  return utf8(lines.join('\n'));
}

/** The base64 signature of `message` by the credential's device (v1/v2 HMAC, v3 Ed25519). */
export async function signRequest(credential, message) {
  if (!(message instanceof Uint8Array)) throw invalidArgument('message must be bytes');
  let signature;
  if (credential?.version === 'v3') {
    if (!credential.signingKey) throw invalidArgument('a v3 credential needs signingKey');
    const raw = await globalThis.crypto.subtle.sign(
      { name: 'Ed25519' },
      credential.signingKey,
      message,
    );
    signature = new Uint8Array(raw);
  } else if (credential?.version === 'v1' || credential?.version === 'v2') {
    if (!credential.apiKey) {
      throw invalidArgument(`a ${credential.version} credential needs apiKey`);
    }
    signature = await mac(credential.apiKey, message);
  } else {
    throw invalidArgument('unknown credential version');
  }
  return b64encode(signature);
}

/** 32 random hex characters: a fresh nonce per request. */
export function newNonce() {
  return bytesToHex(globalThis.crypto.getRandomValues(new Uint8Array(NONCE_BYTES)));
}

/**
 * The four headers of a signed request at `nowS` (the wallet's clock plus its learned offset;
 * seconds, floored to an integer). Values are strings, ready for fetch().
 */
export async function signedHeaders(credential, deviceId, method, path, body, nowS) {
  if (typeof deviceId !== 'string' || !deviceId) throw invalidArgument('deviceId is required');
  if (typeof nowS !== 'number' || !Number.isFinite(nowS)) throw invalidArgument('bad nowS');
  const timestampS = Math.floor(nowS);
  const nonce = newNonce();
  const message = await signingMessage(method, path, timestampS, nonce, body);
  return {
    'Paycode-Device': deviceId,
    'Paycode-Timestamp': String(timestampS),
    'Paycode-Nonce': nonce,
    'Paycode-Signature': await signRequest(credential, message),
  };
}
