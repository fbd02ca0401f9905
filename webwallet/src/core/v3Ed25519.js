// Version 3, Ed25519 in an EMVCo CPM container (docs/spec.md §6):
//   e         = fresh X25519 private key (32 random bytes);  E = X25519 public of e
//   key       = HKDF-SHA256(ikm = X25519(e, S_pub), salt = E | S_pub, info = "paycode-v3seal",
//                           L = 32)
//   envelope  = E | ChaCha20-Poly1305(key, nonce = 0^12, plain, aad = "paycode-v3")   63 bytes
//   signature = Ed25519(sk_dev, "paycode-v3sig" | AID | envelope [| binding])       64 bytes
// X25519 and ChaCha20-Poly1305 come from @noble (WebCrypto lacks them in browsers); HKDF and
// Ed25519 from WebCrypto. The ephemeral key is random per code and never stored.
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { x25519 } from '@noble/curves/ed25519.js';
import { b64encode, concatBytes, utf8, wipe } from './bytes.js';
import { AID, PAYLOAD_BYTES, container } from './cpm.js';
import * as plaintext from './plaintext.js';

const subtle = () => globalThis.crypto.subtle;
export const KEY_BYTES = 32;
export const ENVELOPE_BYTES = KEY_BYTES + plaintext.SIZE + 16;
export const LENGTH = 4 * Math.ceil(PAYLOAD_BYTES / 3);
export const PREFIX = 'hQVDUFYwMWGBk08J8FBBWUNPREUD';
const SIG_DOMAIN = utf8('paycode-v3sig');
const SEAL_INFO = utf8('paycode-v3seal');
const AEAD_AAD = utf8('paycode-v3');
const NONCE = new Uint8Array(12);

export function matches(text) {
  return text.startsWith(PREFIX);
}

async function envelopeKey(sharedSecret, ephPublic, serverPublic) {
  const ikm = await subtle().importKey('raw', sharedSecret, 'HKDF', false, ['deriveBits']);
  const params = {
    name: 'HKDF',
    hash: 'SHA-256',
    salt: concatBytes(ephPublic, serverPublic),
    info: SEAL_INFO,
  };
  return new Uint8Array(await subtle().deriveBits(params, ikm, 8 * KEY_BYTES));
}

/** E | ChaCha20-Poly1305(plain): only the holder of the server's seal key can open it. */
export async function seal(plain, serverPublic, ephPrivate) {
  const ephPublic = x25519.getPublicKey(ephPrivate);
  const shared = x25519.getSharedSecret(ephPrivate, serverPublic);
  const key = await envelopeKey(shared, ephPublic, serverPublic);
  try {
    return concatBytes(ephPublic, chacha20poly1305(key, NONCE, AEAD_AAD).encrypt(plain));
  } finally {
    wipe(shared);
    wipe(key);
  }
}

/** The v3 code; arguments were checked by codes.js. `binding` is empty when unbound. */
export async function generate(credential, step, counter, flags, binding, ephemeralPrivate) {
  const plain = plaintext.pack(credential.handle, step, counter, flags);
  const eph = ephemeralPrivate ?? globalThis.crypto.getRandomValues(new Uint8Array(KEY_BYTES));
  let envelope;
  try {
    envelope = await seal(plain, credential.sealPublic, eph);
  } finally {
    if (eph !== ephemeralPrivate) wipe(eph);
  }
  const message = concatBytes(SIG_DOMAIN, AID, envelope, binding);
  const signature = new Uint8Array(
    await subtle().sign({ name: 'Ed25519' }, credential.signingKey, message),
  );
  const payload = container(envelope, signature);
  if (payload.length !== PAYLOAD_BYTES) throw new Error('v3 payload has the wrong length');
  return b64encode(payload);
}
