// The server's Ed25519 signature on the merchant QR payloads it issues (docs/spec.md §12).
// Just before the CRC come two unreserved templates:
//   80: 00 "dev.paycode", 01 key id, 02 signature (base64url, characters 1-43)
//   81: 00 "dev.paycode", 01 signature (base64url, characters 44-86)
// over "paycode-mpm-signature/1\n" | the UTF-8 payload text up to (not including) the "80".
// The verdict is what the wallet tells the customer: verified, unsigned, unknown_key (fetch
// the keys once: GET /v1/wallet/qr-keys) or altered (refuse to pay). Ed25519 via WebCrypto.
import { b64urlDecode, concatBytes, utf8 } from './bytes.js';
import { EmvFormatError, invalidArgument } from './errors.js';
import { decodeMpm } from './mpm.js';

export const GUID = 'dev.paycode';
export const DOMAIN = utf8('paycode-mpm-signature/1\n');
export const VERDICTS = Object.freeze(['verified', 'unsigned', 'unknown_key', 'altered']);
const SIGNATURE_BYTES = 64;
const PUBLIC_KEY_BYTES = 32;

/**
 * The signature of `payload` as {keyId, signature (64 bytes), message (the signed bytes)}, or
 * null when it has none. Throws EmvFormatError when the templates are present but broken or
 * not last before the CRC. `decoded` (mpm.decodeMpm of payload) saves decoding twice.
 */
export function readSignature(payload, decoded = decodeMpm(payload)) {
  const first = decoded.find('80');
  const second = decoded.find('81');
  if (first === null && second === null) return null;
  if (first === null || second === null) {
    throw new EmvFormatError('a Paycode signature needs both 80 and 81', (first ?? second).offset);
  }
  const tags = decoded.objects.slice(-3).map((item) => item.tag).join(',');
  if (tags !== '80,81,63') {
    throw new EmvFormatError('the signature must come last, just before the CRC', first.offset);
  }
  for (const template of [first, second]) {
    if (template.child('00')?.value !== GUID) {
      throw new EmvFormatError('signature template without the Paycode GUID', template.offset);
    }
  }
  const keyId = first.child('01');
  const head = first.child('02');
  const tail = second.child('01');
  if (keyId === null || head === null || tail === null) {
    throw new EmvFormatError('signature template is missing a field', first.offset);
  }
  let signature;
  try {
    // One spelling per signature (docs/spec.md §12): the strict decoder, as the reference's.
    signature = b64urlDecode(head.value + tail.value);
  } catch {
    throw new EmvFormatError('signature is not base64url', head.offset);
  }
  if (signature.length !== SIGNATURE_BYTES) {
    throw new EmvFormatError('signature is not 64 bytes', head.offset);
  }
  const message = concatBytes(DOMAIN, utf8(decoded.prefix(first.offset)));
  return { keyId: keyId.value, signature, message };
}

function publicKeyOf(keys, keyId) {
  if (!Array.isArray(keys)) throw invalidArgument('keys is a list of {key_id, public_key}');
  const entry = keys.find((key) => (key?.key_id ?? key?.keyId) === keyId);
  if (entry === undefined) return null;
  const text = entry.public_key ?? entry.publicKey;
  let raw;
  try {
    raw = b64urlDecode(text);
  } catch {
    throw invalidArgument(`QR key ${keyId.slice(0, 32)} is not base64url`);
  }
  if (raw.length !== PUBLIC_KEY_BYTES) {
    throw invalidArgument(`QR key ${keyId.slice(0, 32)} is not 32 bytes`);
  }
  return raw;
}

/**
 * The verdict on a payload (text) or on a signature readSignature (or readCollection) found,
 * against the server's QR public keys [{key_id, public_key (base64url)}] (the grant's
 * `qr_keys`, GET /v1/wallet/qr-keys): 'verified' | 'unsigned' | 'unknown_key' | 'altered'.
 * Payload text that is not a readable MPM payload throws EmvFormatError.
 */
export async function verifySignature(payloadOrSignature, keys) {
  const found =
    typeof payloadOrSignature === 'string' ? readSignature(payloadOrSignature) : payloadOrSignature;
  if (found === null || found === undefined) return 'unsigned';
  const raw = publicKeyOf(keys, found.keyId);
  if (raw === null) return 'unknown_key';
  const subtle = globalThis.crypto.subtle;
  let ok = false;
  try {
    const key = await subtle.importKey('raw', raw, { name: 'Ed25519' }, false, ['verify']);
    ok = await subtle.verify({ name: 'Ed25519' }, key, found.signature, found.message);
  } catch {
    ok = false; // a public key that is no curve point verifies nothing
  }
  return ok ? 'verified' : 'altered';
}
