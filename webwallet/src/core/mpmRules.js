// The EMV MPM rules a readable payload may still break (docs/spec.md §12 relies on them: a
// Paycode collection QR must break none). Each breach is a deviation {rule, message, tag,
// offset}; `rule` is a stable id, the same as the Python reference's, and so is the order.
import { currency } from './money.js';

const range = (low, high) =>
  Array.from({ length: high - low + 1 }, (_, i) => String(low + i).padStart(2, '0'));
export const ACCOUNT_TAGS = new Set(range(2, 51));
export const ACCOUNT_TEMPLATE_TAGS = new Set(range(26, 51));
export const UNRESERVED_TAGS = new Set(range(80, 99));
const RFU_TAGS = new Set(range(65, 79));
export const TEMPLATE_TAGS = new Set([...ACCOUNT_TEMPLATE_TAGS, ...UNRESERVED_TAGS, '62', '64']);
const MANDATORY_TAGS = ['00', '52', '53', '58', '59', '60'];
export const VALUE_CHARS_MAX = 99;

const NAMES = {
  '00': 'payload format indicator', '01': 'point of initiation method',
  52: 'merchant category code', 53: 'transaction currency', 54: 'transaction amount',
  55: 'tip or convenience indicator', 56: 'convenience fee (fixed)',
  57: 'convenience fee (percentage)', 58: 'country code', 59: 'merchant name',
  60: 'merchant city', 61: 'postal code', 62: 'additional data', 64: 'language template',
};
const LENGTHS = {
  '00': [2, 2], '01': [2, 2], 52: [4, 4], 53: [3, 3], 54: [1, 13], 55: [2, 2], 56: [1, 13],
  57: [1, 5], 58: [2, 2], 59: [1, 25], 60: [1, 15], 61: [1, 10],
  ...Object.fromEntries(range(1, 8).map((n) => [`62/${n}`, [1, 25]])), '62/09': [1, 3],
  '64/00': [2, 2], '64/01': [1, 25], '64/02': [1, 15],
};
const FIXED_VALUES = {
  '00': ['format_indicator_value', ['01']],
  '01': ['initiation_method_value', ['11', '12']],
};
const AMOUNT = /^[0-9]+(\.[0-9]+)?$/;
const FORMATS = {
  '00': /^[0-9]{2}$/, '01': /^[0-9]{2}$/, 52: /^[0-9]{4}$/, 53: /^[0-9]{3}$/, 54: AMOUNT,
  55: /^0[1-3]$/, 56: AMOUNT, 57: /^[0-9]{1,3}(\.[0-9]{1,2})?$/, 58: /^[A-Z]{2}$/,
};

const deviation = (rule, message, tag = null, offset = null) => ({ rule, message, tag, offset });
const isAns = (value) => /^[\x20-\x7e]*$/.test(value);

/** Every rule `objects` (the top level, children read) breaks, in the reference's order. */
export function deviations(objects) {
  const found = [...headerRules(objects)];
  const present = new Set(objects.map((item) => item.tag));
  for (const tag of MANDATORY_TAGS) {
    if (!present.has(tag)) {
      found.push(deviation('mandatory_missing', `${NAMES[tag]} (${tag}) is missing`, tag));
    }
  }
  if (![...present].some((tag) => ACCOUNT_TAGS.has(tag))) {
    found.push(deviation('mandatory_missing', 'no merchant account (02-51)', '02-51'));
  }
  for (const item of objects) {
    found.push(...fieldRules(item.tag, item), ...templateRules(item));
  }
  found.push(...amountRules(objects));
  return found;
}

function headerRules(objects) {
  const found = [];
  if (objects[0].tag !== '00') {
    found.push(deviation('format_indicator_first', '00 is not the first object', '00', 0));
  }
  const crc = objects[objects.length - 1];
  if (crc.value !== crc.value.toUpperCase()) {
    found.push(deviation('crc_lowercase', 'CRC is in lowercase hex', '63', crc.offset));
  }
  for (const item of objects) {
    const fixed = FIXED_VALUES[item.tag];
    if (fixed && !fixed[1].includes(item.value)) {
      const wanted = fixed[1].join(' or ');
      const message = `${NAMES[item.tag]} is ${JSON.stringify(item.value)}, not ${wanted}`;
      found.push(deviation(fixed[0], message, item.tag, item.offset));
    }
  }
  return found;
}

/** Length, format and character set of one primitive; `key` is "59" or "62/05". */
function fieldRules(key, item) {
  const found = [];
  const name = NAMES[key] ?? key;
  const [low, high] = LENGTHS[key] ?? [1, VALUE_CHARS_MAX];
  if (item.size < low || item.size > high) {
    const limit = low === high ? `${low}` : `${low}-${high}`;
    const message = `${name} is ${item.size} characters; the spec allows ${limit}`;
    found.push(deviation('field_length', message, key, item.offset));
  }
  const pattern = FORMATS[key];
  if (pattern && !pattern.test(item.value)) {
    const message = `${name} ${JSON.stringify(item.value)} is malformed`;
    found.push(deviation('field_format', message, key, item.offset));
  }
  if (RFU_TAGS.has(item.tag) && !key.includes('/')) {
    found.push(deviation('reserved_id', `ID ${key} is reserved for EMVCo`, key, item.offset));
  }
  if (item.children === null && !key.startsWith('64') && !isAns(item.value)) {
    const message = `${name} has characters outside printable ASCII`;
    found.push(deviation('character_set', message, key, item.offset));
  }
  return found;
}

function templateRules(item) {
  const found = [];
  if (UNRESERVED_TAGS.has(item.tag) && item.children === null) {
    const message = `unreserved template ${item.tag} is not a list of data objects`;
    found.push(deviation('template_unparsed', message, item.tag, item.offset));
  }
  const needsGuid = ACCOUNT_TEMPLATE_TAGS.has(item.tag) || UNRESERVED_TAGS.has(item.tag);
  if (needsGuid && item.children !== null && item.child('00') === null) {
    const message = `template ${item.tag} has no globally unique identifier (00)`;
    found.push(deviation('template_guid_missing', message, item.tag, item.offset));
  }
  if (item.tag === '64' && item.children !== null) {
    for (const sub of ['00', '01']) {
      if (item.child(sub) === null) {
        const message = `language template lacks ${sub}`;
        found.push(deviation('mandatory_missing', message, `64/${sub}`, item.offset));
      }
    }
  }
  for (const child of item.children ?? []) {
    found.push(...fieldRules(`${item.tag}/${child.tag}`, child));
  }
  return found;
}

/** Decimals beyond the currency's minor unit, and fee fields without their indicator. */
function amountRules(objects) {
  const found = [];
  const byTag = new Map(objects.map((item) => [item.tag, item]));
  const amount = byTag.get('54');
  const numeric = byTag.get('53');
  if (amount && numeric && AMOUNT.test(amount.value)) {
    const digits = minorDigits(numeric.value);
    const decimals = amount.value.includes('.') ? amount.value.split('.')[1].length : 0;
    if (digits !== null && decimals > digits) {
      const message = `amount has ${decimals} decimals; currency ${numeric.value} has ${digits}`;
      found.push(deviation('amount_minor_digits', message, '54', amount.offset));
    }
  }
  const indicator = byTag.get('55');
  for (const [feeTag, wanted] of [['56', '02'], ['57', '03']]) {
    const fee = byTag.get(feeTag);
    if ((fee !== undefined) !== (indicator !== undefined && indicator.value === wanted)) {
      const at = fee ?? indicator;
      const message = `${NAMES[feeTag]} (${feeTag}) goes with indicator 55 = ${wanted}`;
      const offset = at === undefined ? null : at.offset;
      found.push(deviation('convenience_fee', message, feeTag, offset));
    }
  }
  return found;
}

/** Minor digits of an ISO 4217 numeric code we support; null for anything else. */
function minorDigits(numeric) {
  if (!FORMATS['53'].test(numeric)) return null;
  try {
    return currency(numeric).minorDigits;
  } catch {
    return null;
  }
}
