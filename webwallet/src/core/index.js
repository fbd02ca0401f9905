// The wallet's protocol core (docs/spec.md; docs/api.md, "Wallet request signing"): pure ES
// modules over WebCrypto and @noble, no DOM, no storage, no network. Same code in Node 20
// (the tests) and in the browser (the PWA bundle).
export {
  b64decode,
  b64encode,
  b64urlDecode,
  b64urlEncode,
  bytesToHex,
  concatBytes,
  hexToBytes,
  u16,
  u32,
  u64,
  u8,
  utf8,
} from './bytes.js';
export { readCodeKeys } from './codeKeys.js';
export { EmvCrcError, EmvFormatError, NotPaycodeCollection, PaycodeError } from './errors.js';
export {
  generateSigningKey,
  importEd25519Public,
  importEd25519Seed,
  importHidingKey,
  importSymmetricDevice,
} from './keys.js';
export { checkEd25519Public, checkQrKeys, checkX25519Public } from './keyCheck.js';
export {
  KEY_PROOF_DOMAIN,
  OFFLINE_KEY_PROOF_DOMAIN,
  deviceScope,
  keyProofMessage,
  makeKeyProof,
  makeOfflineKeyProof,
  offlineKeyProofMessage,
  sessionScope,
} from './keyProof.js';
export { STEP_SECONDS, secondsLeftInStep, stepOf, stepStartS } from './timestep.js';
export { dammDigit, dammValid } from './damm.js';
export { base32Decode, base32Encode } from './base32.js';
export { BINDING_BYTES, ID_CHARS_MAX, bindingDigest } from './binding.js';
export {
  BINDABLE,
  CODE_LENGTH,
  COUNTER_MAX,
  FLAG_MERCHANT_BOUND,
  FLAG_USER_VERIFIED,
  HANDLE_BYTES,
  KNOWN_FLAGS,
  PREFIXES,
  VERSIONS,
  generateCode,
  versionOf,
} from './codes.js';
export { PIN_DIGITS, pinProblem } from './credentials.js';
export { SCHEME, newNonce, signRequest, signedHeaders, signingMessage } from './walletAuth.js';
export { SUPPORTED_CURRENCIES, currency, formatAmount, parseAmount } from './money.js';
export { DataObject } from './tlv.js';
export { MpmPayload, PAYLOAD_CHARS_MAX, crc16, decodeMpm } from './mpm.js';
export { GUID, ORDER_TOKEN_CHARS, readCollection } from './collection.js';
export { VERDICTS, readSignature, verifySignature } from './qrSignature.js';
// Offline payment (docs/offline.md): the certificate, the v4 code, the till's own check and
// the allowance's round-robin.
export {
  CERT_BYTES,
  REASONS as OFFLINE_REASONS,
  checkCertificate,
  checkPayment,
  deviceMessage,
  offlineKeyId,
  packCertificateBody,
  packPayment,
  parseCertificate,
  signCertificate,
  signPayment,
  tillBindings,
  unpackPayment,
  verifyOffline,
} from './offline.js';
export {
  LENGTH as V4_LENGTH,
  PREFIX as V4_PREFIX,
  encodeOffline,
  matches as isOfflineCode,
  parseOffline,
} from './v4Offline.js';
export {
  CERTIFICATES_PER_ALLOWANCE,
  allowanceLeft,
  chooseCertificate,
  offlineCode,
} from './offlineAllowance.js';
export { CONSENT_SCHEME, POINTS_ASSET, canonicalJson, consentMessage } from './mandateConsent.js';
