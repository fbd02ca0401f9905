// Version 4: the offline code in an EMVCo Consumer-Presented Mode container (docs/offline.md
// §3.2; the Python twin is shared/paycode/shared/versions/v4_offline.py):
//   85 05 "CPV01"                         payload format indicator
//   61 81 EB                              application template
//      4F 09 F0 "PAYCODE" 04              proprietary AID, v4
//      63 81 DD                           application specific transparent template
//         DF11 81 89 <cert, 137>
//         DF12 0A    <payment, 10>
//         DF13 40    <device_sig, 64>
// 245 bytes, 328 characters of standard padded base64, one spelling. What the fields mean and
// how a till checks them is offline.js; this module only writes and strictly reads the frame.
import { b64decode, b64encode, concatBytes, hexToBytes, utf8 } from './bytes.js';
import { encodeTlv } from './cpm.js';
import { PaycodeError } from './errors.js';
import {
  AID4,
  CERT_BYTES,
  PAYMENT_BYTES,
  SIGNATURE_BYTES,
  packPayment,
  parseCertificate,
  unpackPayment,
} from './offline.js';

export const VERSION = 'v4';
export const PAYLOAD_BYTES = 245;
export const LENGTH = 4 * Math.ceil(PAYLOAD_BYTES / 3);
export const PREFIX = 'hQVDUFYwMWGB608J8FBBWUNPREUE';
const TAG_FORMAT = hexToBytes('85');
const TAG_APP = hexToBytes('61');
const TAG_AID = hexToBytes('4F');
const TAG_APP_DATA = hexToBytes('63');
const TAG_CERT = hexToBytes('DF11');
const TAG_PAYMENT = hexToBytes('DF12');
const TAG_SIGNATURE = hexToBytes('DF13');
const FORMAT_INDICATOR = utf8('CPV01');
// Where each field starts in the one layout: a payload is well formed exactly when it equals
// the container rebuilt from the bytes at these offsets (the Python reader's rebuild-and-compare).
const CERT_AT = 28;
const PAYMENT_AT = CERT_AT + CERT_BYTES + 3;
const SIGNATURE_AT = PAYMENT_AT + PAYMENT_BYTES + 3;

function malformed(message) {
  return new PaycodeError('code_malformed', message);
}

function container(cert, payment, signature) {
  const appData = concatBytes(
    encodeTlv(TAG_CERT, cert),
    encodeTlv(TAG_PAYMENT, payment),
    encodeTlv(TAG_SIGNATURE, signature),
  );
  const application = concatBytes(encodeTlv(TAG_AID, AID4), encodeTlv(TAG_APP_DATA, appData));
  return concatBytes(encodeTlv(TAG_FORMAT, FORMAT_INDICATOR), encodeTlv(TAG_APP, application));
}

export function matches(text) {
  return typeof text === 'string' && text.startsWith(PREFIX);
}

/** The code's one spelling, for a signed code {certificate, payment, deviceSig}. */
export function encodeOffline(code) {
  const payload = container(code.certificate.raw, packPayment(code.payment), code.deviceSig);
  if (payload.length !== PAYLOAD_BYTES) throw new Error('v4 payload has the wrong length');
  return b64encode(payload);
}

function equal(a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/** {certificate, payment, deviceSig} of a well-formed v4 code; code_malformed otherwise. */
export function parseOffline(text) {
  if (typeof text !== 'string' || text.length !== LENGTH || !text.startsWith(PREFIX)) {
    throw malformed(`a v4 code is ${LENGTH} base64 characters starting ${PREFIX}`);
  }
  let payload;
  try {
    payload = b64decode(text); // strict: canonical padding bits, else one code, many spellings
  } catch {
    throw malformed('a v4 code is not canonical base64');
  }
  if (payload.length !== PAYLOAD_BYTES) throw malformed(`a v4 payload is ${PAYLOAD_BYTES} bytes`);
  const cert = payload.slice(CERT_AT, CERT_AT + CERT_BYTES);
  const payment = payload.slice(PAYMENT_AT, PAYMENT_AT + PAYMENT_BYTES);
  const deviceSig = payload.slice(SIGNATURE_AT, SIGNATURE_AT + SIGNATURE_BYTES);
  if (!equal(container(cert, payment, deviceSig), payload)) {
    // Swapped, repeated or extra fields would give one code other spellings; the till keys
    // its log on the text's digest as well as on (cert_id, counter).
    throw malformed('a v4 code has one spelling: DF11, DF12, DF13, nothing else');
  }
  return Object.freeze({
    certificate: parseCertificate(cert),
    payment: unpackPayment(payment),
    deviceSig,
  });
}
