// The consent a wallet signs to bind a merchant to a points mandate (docs/spec.md §16; the
// Python reference is shared/paycode/shared/points.py, consent_message). The signed bytes are
//   "paycode-mandate/1" \n canonical JSON of the ten consent fields
// where canonical JSON is Python's json.dumps(sort_keys=True, separators=(",", ":"),
// ensure_ascii=True): keys sorted, no spaces, every character from U+007F (DEL) up written as a
// lowercase \uXXXX escape (UTF-16 code units, so a character outside the BMP is its surrogate
// pair). The server rebuilds these bytes from the request and verifies the device's signature
// over them, so one differing byte refuses the binding: tests/vectors/mandate_consent.json
// holds Python-made messages this module must reproduce.
import { invalidArgument } from './errors.js';
import { utf8 } from './bytes.js';

export const CONSENT_SCHEME = 'paycode-mandate/1';
export const POINTS_ASSET = 'PTS';

const INTEGER_FIELDS = ['rate_points', 'rate_minor', 'cap_per_payment_points', 'cap_per_day_points', 'expires_at_s'];
const STRING_FIELDS = ['merchant_id', 'currency', 'device_id', 'reference', 'asset'];

function asciiJsonString(text) {
  // JSON.stringify escapes quotes, backslashes and control characters exactly as Python does
  // (\b \f \n \r \t, else lowercase \u00XX); what is left is DEL and the non-ASCII units,
  // which Python escapes and JSON.stringify does not.
  return JSON.stringify(text).replace(/[\u007f-\uffff]/g, (unit) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** The canonical JSON of a flat object of strings and safe integers (the consent's shape). */
export function canonicalJson(fields) {
  const keys = Object.keys(fields).sort();
  const members = keys.map((key) => {
    const value = fields[key];
    let text;
    if (typeof value === 'string') text = asciiJsonString(value);
    else if (Number.isSafeInteger(value)) text = String(value);
    else throw invalidArgument(`consent field ${key} must be a string or a safe integer`);
    return `${asciiJsonString(key)}:${text}`;
  });
  return `{${members.join(',')}}`;
}

/**
 * The exact bytes signed for `consent` = {merchant_id, currency, rate_points, rate_minor,
 * cap_per_payment_points, cap_per_day_points, expires_at_s, device_id, reference?, asset?}
 * (reference defaults to "", asset to "PTS", as in the Python Consent).
 */
export function consentMessage(consent) {
  const fields = { reference: '', asset: POINTS_ASSET, ...consent };
  const known = new Set([...INTEGER_FIELDS, ...STRING_FIELDS]);
  for (const key of Object.keys(fields)) {
    if (!known.has(key)) throw invalidArgument(`unknown consent field ${key.slice(0, 32)}`);
  }
  for (const key of INTEGER_FIELDS) {
    if (!Number.isSafeInteger(fields[key])) throw invalidArgument(`consent field ${key} must be an integer`);
  }
  for (const key of STRING_FIELDS) {
    if (typeof fields[key] !== 'string') throw invalidArgument(`consent field ${key} must be a string`);
  }
  return utf8(`${CONSENT_SCHEME}\n${canonicalJson(fields)}`);
}
