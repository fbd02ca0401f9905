// Offline payment (docs/offline.md §2.3, §3.2, §4.2 steps 3-6); the Python twin is
// shared/paycode/shared/offline.py and both reproduce tests/vectors/offline.json:
//   body      = u8(1) | cert_id[16] | key_id[4] | offline_pk[32] | currency[3]
//               | u32(p) | u32(T) | u8(n) | u32(not_before) | u32(expiry)        73 bytes
//   cert      = body | Ed25519(sk_offline, "paycode-offline-cert/1\n" | body)     137 bytes
//   payment   = u8(counter) | u32(step) | u32(amount_limit_minor) | u8(flags)    10 bytes
//   message   = "paycode-v4sig" | AID4 | cert | payment [| binding]
// Ed25519 is WebCrypto's, as for v3. Malformed bytes throw PaycodeError('code_malformed'); a
// well-formed code that is wrong, expired or not for this till is a refusal with a stable
// reason, returned, never thrown.
import { bindingDigest, BINDING_BYTES } from './binding.js';
import { b64decode, bytesToHex, concatBytes, hexToBytes, u32, u8, utf8 } from './bytes.js';
import { PaycodeError, invalidArgument } from './errors.js';
import { checkEd25519Public } from './keyCheck.js';
import { importEd25519Public, importEd25519Seed } from './keys.js';
import { sha256 } from './prf.js';
import { stepOf } from './timestep.js';

export const FORMAT = 1;
export const CERT_ID_BYTES = 16;
export const KEY_ID_BYTES = 4;
export const KEY_BYTES = 32;
export const SIGNATURE_BYTES = 64;
export const BODY_BYTES = 73;
export const CERT_BYTES = BODY_BYTES + SIGNATURE_BYTES;
export const PAYMENT_BYTES = 10;
/** `count_max` is one byte; codes carry counters 0..n-1. */
export const COUNT_MAX_LIMIT = 255;
export const CERT_DOMAIN = utf8('paycode-offline-cert/1\n');
export const SIG_DOMAIN = utf8('paycode-v4sig');
/** In the container and in the signed message, so a device signature cannot be replayed
 * under another version's frame. */
export const AID4 = hexToBytes('F0504159434F444504');
export const FLAG_MERCHANT_BOUND = 2;
/** Bit 0 (PIN) is reserved in v4: the PIN was given for the allowance (§3.2). */
export const KNOWN_FLAGS = FLAG_MERCHANT_BOUND;
/** §4.2 step 6: E - 2 <= step <= E + 1; both clocks may be off and no server corrects the
 * till's, single use rests on the till's log instead. */
export const STEPS_BACK = 2;
export const STEPS_AHEAD = 1;
export const REASONS = Object.freeze({
  CERTIFICATE_INVALID: 'certificate_invalid',
  CERTIFICATE_EXPIRED: 'certificate_expired',
  CURRENCY_MISMATCH: 'currency_mismatch',
  CODE_INVALID: 'code_invalid',
  MERCHANT_MISMATCH: 'merchant_mismatch',
  CODE_EXPIRED: 'code_expired',
});

const U32_MAX = 0xffffffff;
const CURRENCY_RE = /^[A-Z]{3}$/;

function malformed(message) {
  return new PaycodeError('code_malformed', message);
}

function readU32(raw, at) {
  return ((raw[at] << 24) >>> 0) + (raw[at + 1] << 16) + (raw[at + 2] << 8) + raw[at + 3];
}

function isCount(value, max) {
  return Number.isSafeInteger(value) && value >= 0 && value <= max;
}

/** SHA-256(public key)[0:4]: self-certifying, nothing to look up to trust it. */
export async function offlineKeyId(publicKey) {
  return (await sha256(publicKey)).slice(0, KEY_ID_BYTES);
}

/** The 73-byte body of certificate `fields` (camelCase twins of the Python dataclass). */
export function packCertificateBody(fields) {
  const { certId, serverKeyId, offlinePk, currency } = fields;
  if (!(certId instanceof Uint8Array) || certId.length !== CERT_ID_BYTES) {
    throw invalidArgument(`cert_id is ${CERT_ID_BYTES} bytes`);
  }
  if (!(serverKeyId instanceof Uint8Array) || serverKeyId.length !== KEY_ID_BYTES) {
    throw invalidArgument(`the server key id is ${KEY_ID_BYTES} bytes`);
  }
  checkEd25519Public(offlinePk);
  if (typeof currency !== 'string' || !CURRENCY_RE.test(currency)) {
    throw invalidArgument('currency must be an ISO 4217 alpha code');
  }
  const p = fields.perPaymentCapMinor;
  const total = fields.totalCapMinor;
  if (!isCount(total, U32_MAX) || !Number.isSafeInteger(p) || p < 1 || p > total) {
    throw invalidArgument('caps must satisfy 1 <= per_payment_cap <= total_cap');
  }
  if (!isCount(fields.countMax, COUNT_MAX_LIMIT) || fields.countMax < 1) {
    throw invalidArgument(`count_max must be within 1..${COUNT_MAX_LIMIT}`);
  }
  if (!(fields.notBeforeS < fields.expiryS)) {
    throw invalidArgument('not_before must come before expiry');
  }
  return concatBytes(
    u8(FORMAT),
    certId,
    serverKeyId,
    offlinePk,
    utf8(currency),
    u32(p),
    u32(total),
    u8(fields.countMax),
    u32(fields.notBeforeS),
    u32(fields.expiryS),
  );
}

/** The private key for `seed`: 32 raw bytes are imported (non-extractable), a CryptoKey is
 * used as it is (the app keeps the offline keys as non-extractable CryptoKeys). */
async function signingKey(seed) {
  if (seed instanceof Uint8Array) return importEd25519Seed(seed);
  if (typeof seed === 'object' && seed !== null && seed.type === 'private') return seed;
  throw invalidArgument('an offline key is a 32-byte seed or an Ed25519 private CryptoKey');
}

async function ed25519Sign(seed, message) {
  const key = await signingKey(seed);
  return new Uint8Array(await globalThis.crypto.subtle.sign({ name: 'Ed25519' }, key, message));
}

/** Whether `signature` by `publicKey` verifies over `message`; a key or signature that cannot
 * be one is no signature (false), never an exception. */
export async function ed25519Signed(publicKey, signature, message) {
  if (!(signature instanceof Uint8Array) || signature.length !== SIGNATURE_BYTES) return false;
  try {
    const key = await importEd25519Public(publicKey);
    return await globalThis.crypto.subtle.verify({ name: 'Ed25519' }, key, signature, message);
  } catch {
    return false;
  }
}

/** The 137-byte certificate signed by the server's offline key (tests and vectors only: the
 * server signs certificates). */
export async function signCertificate(fields, serverSeed) {
  const body = packCertificateBody(fields);
  return concatBytes(body, await ed25519Sign(serverSeed, concatBytes(CERT_DOMAIN, body)));
}

/**
 * The fields of a certificate: 137 bytes, or their standard base64 as the server's answer
 * carries them. Only the layout is checked here; what the signature vouches for is judged by
 * verifyOffline, as a refusal. Returns {fields, raw, body, signature}.
 */
export function parseCertificate(cert) {
  let raw = cert;
  if (typeof cert === 'string') {
    try {
      raw = b64decode(cert);
    } catch {
      throw malformed('an offline certificate is not base64');
    }
  }
  if (!(raw instanceof Uint8Array) || raw.length !== CERT_BYTES) {
    throw malformed(`an offline certificate is ${CERT_BYTES} bytes`);
  }
  if (raw[0] !== FORMAT) throw malformed(`offline certificate format ${raw[0]} is not ${FORMAT}`);
  const currency = String.fromCharCode(...raw.subarray(53, 56));
  if (!CURRENCY_RE.test(currency)) {
    throw malformed("an offline certificate's currency is three capital letters");
  }
  const copy = Uint8Array.from(raw);
  const fields = Object.freeze({
    certId: copy.slice(1, 17),
    serverKeyId: copy.slice(17, 21),
    offlinePk: copy.slice(21, 53),
    currency,
    perPaymentCapMinor: readU32(copy, 56),
    totalCapMinor: readU32(copy, 60),
    countMax: copy[64],
    notBeforeS: readU32(copy, 65),
    expiryS: readU32(copy, 69),
  });
  return Object.freeze({
    fields,
    raw: copy,
    body: copy.slice(0, BODY_BYTES),
    signature: copy.slice(BODY_BYTES),
  });
}

/** The 10 payment bytes of {counter, step, amountLimitMinor, flags}. */
export function packPayment({ counter, step, amountLimitMinor, flags = 0 }) {
  if (!isCount(counter, 0xff) || !isCount(flags, 0xff)) {
    throw invalidArgument('counter and flags are one byte each');
  }
  if (!isCount(step, U32_MAX) || !isCount(amountLimitMinor, U32_MAX)) {
    throw invalidArgument(`step and amount limit must be within 0..${U32_MAX}`);
  }
  return concatBytes(u8(counter), u32(step), u32(amountLimitMinor), u8(flags));
}

export function unpackPayment(raw) {
  if (!(raw instanceof Uint8Array) || raw.length !== PAYMENT_BYTES) {
    throw malformed(`v4 payment fields are ${PAYMENT_BYTES} bytes`);
  }
  return Object.freeze({
    counter: raw[0],
    step: readU32(raw, 1),
    amountLimitMinor: readU32(raw, 5),
    flags: raw[9],
  });
}

/** What the device signs: the binding digest is signed, never carried (spec §10). */
export function deviceMessage(cert, payment, binding = new Uint8Array(0)) {
  if (!(binding instanceof Uint8Array) || ![0, BINDING_BYTES].includes(binding.length)) {
    throw invalidArgument(`a binding is empty or ${BINDING_BYTES} bytes`);
  }
  return concatBytes(SIG_DOMAIN, AID4, cert, payment, binding);
}

/**
 * A signed code {certificate, payment, deviceSig} of `certificate` (from parseCertificate).
 * `seed`: the certificate's 32-byte seed or its private CryptoKey; `binding`: the 32-byte
 * digest exactly when flags has FLAG_MERCHANT_BOUND. Throws invalid_argument when the code
 * could never verify (flags and binding disagree, or the key is not the certificate's).
 */
export async function signPayment(certificate, payment, seed, binding = null) {
  const digest = binding ?? new Uint8Array(0);
  if (Boolean((payment.flags ?? 0) & FLAG_MERCHANT_BOUND) !== digest.length > 0) {
    throw invalidArgument('a binding goes with the MERCHANT_BOUND flag, and only with it');
  }
  const message = deviceMessage(certificate.raw, packPayment(payment), digest);
  const deviceSig = await ed25519Sign(seed, message);
  // A CryptoKey cannot show its public half: checking the signature itself proves the key is
  // the certificate's before the wallet spends a counter on a code no till would take.
  if (!(await ed25519Signed(certificate.fields.offlinePk, deviceSig, message))) {
    throw invalidArgument("the offline key is not the certificate's key");
  }
  return Object.freeze({ certificate, payment: unpackPayment(packPayment(payment)), deviceSig });
}

/** The digests a code bound to this till can carry: terminal first, then merchant only (the
 * twin of binding.charging_point_bindings). */
export async function tillBindings(merchantId, terminalId) {
  return [await bindingDigest(merchantId, terminalId), await bindingDigest(merchantId, null)];
}

function refuse(reason, detail) {
  return Object.freeze({ accepted: false, reason, detail });
}

/** §4.2 step 3: signed by a key the till holds, and what it certifies is usable. */
async function certificateGenuine(certificate, serverKeys) {
  const { fields } = certificate;
  const publicKey = serverKeys.get(bytesToHex(fields.serverKeyId));
  if (publicKey === undefined) {
    return refuse(REASONS.CERTIFICATE_INVALID, 'signed by an unknown server key');
  }
  const message = concatBytes(CERT_DOMAIN, certificate.body);
  if (!(await ed25519Signed(publicKey, certificate.signature, message))) {
    return refuse(REASONS.CERTIFICATE_INVALID, "the server's signature fails");
  }
  try {
    checkEd25519Public(fields.offlinePk);
  } catch {
    // Only a leaked server key signs one: a weak key would verify any payment.
    return refuse(REASONS.CERTIFICATE_INVALID, 'the certified key is weak');
  }
  const { perPaymentCapMinor: p, totalCapMinor: total } = fields;
  if (!(p >= 1 && p <= total) || fields.countMax < 1) {
    return refuse(REASONS.CERTIFICATE_INVALID, "the certificate's caps are void");
  }
  return null;
}

/**
 * §4.2 steps 3 and 4 (without `denied`): null when the certificate may pay at `nowS`.
 * `serverKeys`: a Map from the key id's hex to the offline public key (32 bytes), as the till
 * fetched them.
 */
export async function checkCertificate(certificate, { serverKeys, nowS, currency = null }) {
  const refused = await certificateGenuine(certificate, serverKeys);
  if (refused !== null) return refused;
  const { fields } = certificate;
  if (currency !== null && fields.currency !== currency) {
    return refuse(REASONS.CURRENCY_MISMATCH, `certificate is in ${fields.currency}`);
  }
  if (!(fields.notBeforeS <= nowS && nowS < fields.expiryS)) {
    return refuse(REASONS.CERTIFICATE_EXPIRED, "outside the certificate's window");
  }
  return null;
}

/** §4.2 step 5 before the signature: what the certificate allows a code to say. */
function paymentInCaps(code) {
  const { fields } = code.certificate;
  const { payment } = code;
  if (payment.flags & ~KNOWN_FLAGS) {
    return refuse(REASONS.CODE_INVALID, 'the code carries flags v4 does not know');
  }
  if (payment.counter >= fields.countMax) {
    return refuse(REASONS.CODE_INVALID, "counter beyond the certificate's count");
  }
  if (!(payment.amountLimitMinor >= 1 && payment.amountLimitMinor <= fields.perPaymentCapMinor)) {
    return refuse(REASONS.CODE_INVALID, 'amount limit outside 1..per-payment cap');
  }
  return null;
}

/** §4.2 steps 5 and 6: null when the device signed this payment and it is fresh.
 * `bindings`: tillBindings(merchantId, terminalId) of this till. */
export async function checkPayment(code, { bindings = [], nowS }) {
  const refused = paymentInCaps(code);
  if (refused !== null) return refused;
  const { payment, deviceSig } = code;
  const pk = code.certificate.fields.offlinePk;
  const message = deviceMessage(code.certificate.raw, packPayment(payment));
  if (payment.flags & FLAG_MERCHANT_BOUND) {
    let signed = false;
    for (const binding of bindings) {
      if (await ed25519Signed(pk, deviceSig, concatBytes(message, binding))) {
        signed = true;
        break;
      }
    }
    if (!signed) return refuse(REASONS.MERCHANT_MISMATCH, 'the code is bound elsewhere');
  } else if (!(await ed25519Signed(pk, deviceSig, message))) {
    return refuse(REASONS.CODE_INVALID, 'the device signature fails');
  }
  const expected = stepOf(nowS);
  if (!(payment.step >= expected - STEPS_BACK && payment.step <= expected + STEPS_AHEAD)) {
    return refuse(REASONS.CODE_EXPIRED, "the code's time step is too far from now");
  }
  return null;
}

/**
 * What a till can check alone, in the order of §4.2; the first failure is the verdict:
 * {accepted: true, code} or {accepted: false, reason, detail}. `currency` null: any.
 */
export async function verifyOffline(code, { serverKeys, nowS, bindings = [], currency = null }) {
  const refused =
    (await checkCertificate(code.certificate, { serverKeys, nowS, currency })) ??
    (await checkPayment(code, { bindings, nowS }));
  return refused ?? Object.freeze({ accepted: true, code });
}
