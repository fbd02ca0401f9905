// The EMVCo Consumer-Presented Mode container of the v3 code (docs/spec.md §6): BER-TLV with
// shortest definite lengths, base64 (standard alphabet, padded):
//   85 05 "CPV01"                       Payload Format Indicator
//   61 81 93                            Application Template
//      4F 09 <AID>                      Application Definition File Name
//      63 81 85                         Application Specific Transparent Template
//         DF01 3F <envelope>            sealed handle, step, counter, flags
//         DF02 40 <signature>           Ed25519 signature
// Only the encoder lives here: the wallet makes codes, the server reads them.
import { concatBytes, hexToBytes, utf8 } from './bytes.js';

export const AID = hexToBytes('F0504159434F444503'); // 'F' RID, "PAYCODE", version 3
export const PAYLOAD_BYTES = 157;
const TAG_FORMAT = hexToBytes('85');
const TAG_APP = hexToBytes('61');
const TAG_AID = hexToBytes('4F');
const TAG_APP_DATA = hexToBytes('63');
const TAG_ENVELOPE = hexToBytes('DF01');
const TAG_SIGNATURE = hexToBytes('DF02');
const FORMAT_INDICATOR = utf8('CPV01');

/** The shortest definite BER length field: one byte below 128, else 0x8N and N bytes. */
export function lengthField(length) {
  if (length < 0x80) return new Uint8Array([length]);
  const bytes = [];
  for (let n = length; n > 0; n >>= 8) bytes.unshift(n & 0xff);
  return new Uint8Array([0x80 | bytes.length, ...bytes]);
}

/** One BER-TLV item: tag bytes, shortest length, value. */
export function encodeTlv(tag, value) {
  return concatBytes(tag, lengthField(value.length), value);
}

/** The 157-byte v3 payload for an envelope (63 bytes) and a signature (64 bytes). */
export function container(envelope, signature) {
  const appData = concatBytes(
    encodeTlv(TAG_ENVELOPE, envelope),
    encodeTlv(TAG_SIGNATURE, signature),
  );
  const application = concatBytes(encodeTlv(TAG_AID, AID), encodeTlv(TAG_APP_DATA, appData));
  return concatBytes(encodeTlv(TAG_FORMAT, FORMAT_INDICATOR), encodeTlv(TAG_APP, application));
}
