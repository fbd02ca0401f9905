// EMVCo Merchant-Presented Mode payloads (docs/spec.md §12): the merchant's QR text, data
// objects of tlv.js, closed by the CRC (ID 63): CRC-16/CCITT-FALSE over the UTF-8 bytes of
// everything up to and including "6304". Mirrors the Python reference: lenient but safe
// reading of any scheme's payload (every broken rule listed as a deviation, mpmRules.js), and
// an EmvFormatError / EmvCrcError, with the offset, only when the text cannot be read
// unambiguously. Work is bounded by PAYLOAD_CHARS_MAX.
import { utf8 } from './bytes.js';
import { EmvCrcError, EmvFormatError } from './errors.js';
import {
  ACCOUNT_TAGS,
  ACCOUNT_TEMPLATE_TAGS,
  TEMPLATE_TAGS,
  UNRESERVED_TAGS,
  deviations,
} from './mpmRules.js';
import { recognize } from './schemes.js';
import { DataObject, HEADER_CHARS, readLevel } from './tlv.js';

export const PAYLOAD_CHARS_MAX = 512;
export const CRC_TAG = '63';
export const CRC_HEADER = '6304';
const CRC_CHARS = 4;

/** CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor. */
export function crc16(data) {
  let crc = 0xffff;
  for (const byte of data) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) {
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
  }
  return crc;
}

/** A decoded payload: every object in order, the broken rules and the scheme if known. */
export class MpmPayload {
  constructor(text, chars, objects, deviationList, scheme) {
    this.text = text;
    /** The payload as code points: offsets index this array. */
    this.chars = chars;
    this.objects = objects;
    this.deviations = deviationList;
    this.scheme = scheme;
  }

  find(tag) {
    return this.objects.find((item) => item.tag === tag) ?? null;
  }

  value(tag) {
    return this.find(tag)?.value ?? null;
  }

  /** "static" (01 = 11: a reusable poster), "dynamic" (12: one payment), else null. */
  get pointOfInitiation() {
    return { 11: 'static', 12: 'dynamic' }[this.value('01') ?? ''] ?? null;
  }

  /** IDs 02-51: card network primitives (02-25) and network templates (26-51). */
  get merchantAccounts() {
    return this.objects.filter((item) => ACCOUNT_TAGS.has(item.tag));
  }

  /** The text from the start up to (not including) code point `offset`. */
  prefix(offset) {
    return this.chars.slice(0, offset).join('');
  }
}

/** The payload's code points; refuses non-text, over-long text and lone surrogates. */
export function payloadChars(payload) {
  if (typeof payload !== 'string') {
    throw new EmvFormatError(`payload must be text, got ${typeof payload}`, 0);
  }
  const chars = Array.from(payload);
  if (chars.length > PAYLOAD_CHARS_MAX) {
    const message = `payload is ${chars.length} characters, over ${PAYLOAD_CHARS_MAX}`;
    throw new EmvFormatError(message, PAYLOAD_CHARS_MAX);
  }
  const lone = chars.findIndex((char) => {
    const code = char.charCodeAt(0);
    return char.length === 1 && code >= 0xd800 && code <= 0xdfff;
  });
  if (lone >= 0) throw new EmvFormatError('payload holds a lone surrogate', lone);
  return chars;
}

/** Read a payload; throws EmvFormatError (EmvCrcError for a CRC mismatch) at the defect. */
export function decodeMpm(payload) {
  const chars = payloadChars(payload);
  const top = readLevel(chars, 0, chars.length);
  checkCrc(chars, top);
  const objects = top.map((item) => withChildren(chars, item));
  const guids = objects
    .filter((item) => ACCOUNT_TEMPLATE_TAGS.has(item.tag) && item.child('00') !== null)
    .map((item) => item.child('00').value);
  return new MpmPayload(payload, chars, objects, deviations(objects), recognize(guids));
}

/** The CRC comes last, is four hex digits and matches; checked before any nested read. */
function checkCrc(chars, top) {
  const crc = top.find((item) => item.tag === CRC_TAG);
  if (crc === undefined) {
    throw new EmvFormatError(`no CRC data object (${CRC_HEADER}....)`, chars.length);
  }
  if (crc !== top[top.length - 1]) {
    throw new EmvFormatError('data follows the CRC, which must come last', crc.end);
  }
  if (crc.size !== CRC_CHARS) {
    throw new EmvFormatError(`CRC length is ${crc.size}, not 04`, crc.offset + 2);
  }
  const valueOffset = crc.offset + HEADER_CHARS;
  const computed = crc16(utf8(chars.slice(0, valueOffset).join('')));
  if (!/^[0-9A-Fa-f]{4}$/.test(crc.value) || parseInt(crc.value, 16) !== computed) {
    const hex = computed.toString(16).toUpperCase().padStart(4, '0');
    const message = `CRC ${JSON.stringify(crc.value)} does not match the payload (computed ${hex})`;
    throw new EmvCrcError(message, valueOffset);
  }
}

/** A template's nested objects (one level). An unreserved template (80-99) that does not
 * parse is kept as text: schemes use those IDs freely. */
function withChildren(chars, item) {
  if (!TEMPLATE_TAGS.has(item.tag)) return item;
  const start = item.offset + HEADER_CHARS;
  let children;
  try {
    children = readLevel(chars, start, start + item.size);
  } catch (error) {
    if (error instanceof EmvFormatError && UNRESERVED_TAGS.has(item.tag)) return item;
    throw error;
  }
  return new DataObject(item.tag, item.value, item.offset, item.size, children);
}
