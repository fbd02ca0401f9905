// Currencies and amounts of merchant QR payloads (docs/spec.md §12; docs/api.md: amounts are
// decimal strings, never floats). Mirrors the Python reference: the supported ISO 4217
// currencies (alpha, numeric as EMV tag 53 carries it, minor digits) and the strict amount
// grammar [0-9]{1,16}(\.[0-9]{1,d})? with d the currency's minor digits, positive, at most
// 10^15 minor units. Errors are PaycodeError('amount_invalid').
import { PaycodeError } from './errors.js';

export const MAX_AMOUNT_MINOR = 10 ** 15;
const INTEGER_DIGITS_MAX = 16;
const AMOUNT_TEXT_CHARS_MAX = 40;

const TABLE = [
  ['CNY', '156', 2], ['USD', '840', 2], ['EUR', '978', 2], ['GBP', '826', 2],
  ['JPY', '392', 0], ['KRW', '410', 0], ['HKD', '344', 2], ['SGD', '702', 2],
  ['THB', '764', 2], ['INR', '356', 2], ['BRL', '986', 2], ['IDR', '360', 2],
  ['MYR', '458', 2], ['VND', '704', 0], ['PHP', '608', 2], ['AUD', '036', 2],
  ['CAD', '124', 2], ['CHF', '756', 2], ['TWD', '901', 2], ['MOP', '446', 2],
  ['KWD', '414', 3], ['BHD', '048', 3], ['JOD', '400', 3], ['CLP', '152', 0],
  ['ISK', '352', 0],
];
export const SUPPORTED_CURRENCIES = Object.freeze(
  TABLE.map(([alpha, numeric, minorDigits]) => Object.freeze({ alpha, numeric, minorDigits })),
);
const BY_CODE = new Map();
for (const entry of SUPPORTED_CURRENCIES) {
  BY_CODE.set(entry.alpha, entry);
  BY_CODE.set(entry.numeric, entry);
}

function amountInvalid(message) {
  return new PaycodeError('amount_invalid', message);
}

/** The currency for an alpha ("CNY", uppercase only) or numeric ("156") ISO 4217 code. */
export function currency(code) {
  const found = typeof code === 'string' ? BY_CODE.get(code) : undefined;
  if (found === undefined) throw amountInvalid(`unsupported currency ${String(code).slice(0, 8)}`);
  return found;
}

/** {amountMinor, currency (alpha)} of a decimal string such as "12.50"; strict, never rounds. */
export function parseAmount(text, currencyCode) {
  if (typeof text !== 'string') throw amountInvalid('amount must be a decimal string');
  if (text.length > AMOUNT_TEXT_CHARS_MAX) {
    throw amountInvalid(`amount is longer than ${AMOUNT_TEXT_CHARS_MAX} characters`);
  }
  if (!/^[0-9.]+$/.test(text)) {
    throw amountInvalid('amount may contain only ASCII digits and one "."');
  }
  const found = currency(currencyCode);
  const [whole, fraction, ...more] = text.split('.');
  const dot = fraction !== undefined;
  if (more.length) throw amountInvalid('amount has more than one "."');
  if (!whole) throw amountInvalid('amount needs a digit before the "."');
  if (whole.length > INTEGER_DIGITS_MAX) {
    throw amountInvalid(`amount has more than ${INTEGER_DIGITS_MAX} digits before the "."`);
  }
  if (dot && found.minorDigits === 0) {
    throw amountInvalid(`${found.alpha} has no minor unit; amount must be a whole number`);
  }
  if (dot && !fraction) throw amountInvalid('amount needs a digit after the "."');
  if ((fraction ?? '').length > found.minorDigits) {
    throw amountInvalid(`${found.alpha} allows at most ${found.minorDigits} decimal places`);
  }
  const scale = 10n ** BigInt(found.minorDigits);
  const minorText = (fraction ?? '').padEnd(found.minorDigits, '0');
  const minor = BigInt(whole) * scale + BigInt(minorText || '0');
  if (minor === 0n) throw amountInvalid('amount must be greater than zero');
  if (minor > BigInt(MAX_AMOUNT_MINOR)) {
    throw amountInvalid(`amount exceeds the maximum of ${MAX_AMOUNT_MINOR} minor units`);
  }
  return { amountMinor: Number(minor), currency: found.alpha };
}

/** The canonical decimal string ("12.50", "5") of {amountMinor, currency}. */
export function formatAmount({ amountMinor, currency: alpha }) {
  const digits = currency(alpha).minorDigits;
  const sign = amountMinor < 0 ? '-' : '';
  const magnitude = String(Math.abs(amountMinor));
  if (digits === 0) return sign + magnitude;
  const padded = magnitude.padStart(digits + 1, '0');
  return `${sign}${padded.slice(0, -digits)}.${padded.slice(-digits)}`;
}
