// Merchant binding (docs/spec.md §10): the digest a merchant-bound v2/v3 code's tag or
// signature also covers, never carried in the code:
//   binding = SHA-256("paycode-bind-1" | merchant_id | 0x00 | terminal_id)      32 bytes
// with terminal_id empty when the merchant's QR names none; both ids UTF-8, 1 to 99
// characters (Unicode code points, as the Python reference counts them), no NUL.
import { concatBytes, utf8 } from './bytes.js';
import { invalidArgument } from './errors.js';
import { sha256 } from './prf.js';

export const BINDING_BYTES = 32;
export const ID_CHARS_MAX = 99;
const DOMAIN = utf8('paycode-bind-1');
const SEPARATOR = new Uint8Array([0]);

function checkId(name, value) {
  if (typeof value !== 'string') throw invalidArgument(`${name} must be a string`);
  const chars = [...value].length;
  if (chars < 1 || chars > ID_CHARS_MAX) {
    throw invalidArgument(`${name} must be 1..${ID_CHARS_MAX} characters`);
  }
  if (value.includes('\0')) {
    // NUL separates the two ids: allowing it would let two pairs share one digest.
    throw invalidArgument(`${name} must not contain NUL`);
  }
  if (!isWellFormed(value)) throw invalidArgument(`${name} holds a lone surrogate`);
}

/** True when `text` has no lone UTF-16 surrogate (it has a UTF-8 encoding). */
export function isWellFormed(text) {
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text);
}

/** The 32-byte digest for a merchant (terminalId '' or null: any of its terminals). */
export async function bindingDigest(merchantId, terminalId = null) {
  checkId('merchant id', merchantId);
  const terminal = terminalId ?? '';
  if (terminal !== '') checkId('terminal id', terminal);
  return sha256(concatBytes(DOMAIN, utf8(merchantId), SEPARATOR, utf8(terminal)));
}
