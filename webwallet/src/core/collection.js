// A Paycode merchant collection QR (docs/spec.md §10, §12): an EMV MPM payload whose merchant
// account template 26 has GUID "dev.paycode" (00), the merchant id (01), optionally a
// terminal id (02) and, for a server order, the order token (03). 01 says static (11, the
// customer types the amount) or dynamic (12, amount in 54); 62/05 shows the merchant's order
// id; template 64 holds name and city in the merchant's own script. Reading is strict, as the
// Python reference's read_collection: any spec deviation means the code was not made by a
// Paycode server (or was damaged), and a wallet must not pay it.
import { EmvFormatError, NotPaycodeCollection } from './errors.js';
import { currency, formatAmount, parseAmount } from './money.js';
import { decodeMpm } from './mpm.js';
import { readSignature } from './qrSignature.js';
import { casefold } from './schemes.js';

export const GUID = 'dev.paycode';
export const ORDER_TOKEN_CHARS = 24;
const DYNAMIC = '12';

function paycodeTemplate(decoded) {
  for (const account of decoded.merchantAccounts) {
    const guid = account.child('00');
    if (guid !== null && casefold(guid.value) === GUID) return account;
  }
  const scheme = decoded.scheme ?? 'an unknown scheme';
  const message = `a merchant QR of ${scheme}, not a Paycode collection code`;
  throw new NotPaycodeCollection(message, decoded.scheme);
}

function readCurrency(decoded) {
  const item = decoded.find('53');
  try {
    return currency(item.value);
  } catch {
    throw new EmvFormatError(`unsupported currency ${item.value}`, item.offset);
  }
}

/** The canonical amount text of a dynamic code; null for a static one. 01 must say which. */
function readAmount(decoded, found) {
  const initiation = decoded.find('01');
  const item = decoded.find('54');
  if (initiation === null || (initiation.value === DYNAMIC) !== (item !== null)) {
    const offset = initiation === null ? decoded.objects[0].offset : initiation.offset;
    throw new EmvFormatError('01 must be 12 with an amount and 11 without', offset);
  }
  if (item === null) return null;
  try {
    return formatAmount(parseAmount(item.value, found.alpha));
  } catch (error) {
    throw new EmvFormatError(`amount: ${error.detail ?? error.message}`, item.offset);
  }
}

const childValue = (template, tag) => template?.child(tag)?.value ?? null;

/**
 * What a Paycode collection QR says, for the wallet to show and to bind a code to:
 * {merchantId, terminalId, orderToken, amountText, currency (ISO alpha), currencyNumeric,
 *  merchantName, merchantCity, countryCode, mcc, language, localName, localCity, displayName,
 *  displayCity, initiation ('static'|'dynamic'), merchantOrderId, signature, payload}.
 * `signature` is {keyId, signature, message} or null (qrSignature.verifySignature judges it).
 * Throws EmvFormatError / EmvCrcError (code_malformed, with the offset) for a broken payload
 * or our template used against our rules, NotPaycodeCollection for another scheme's QR.
 */
export function readCollection(payload) {
  const decoded = decodeMpm(payload);
  const template = paycodeTemplate(decoded);
  const end = decoded.objects[decoded.objects.length - 1].offset;
  if (decoded.deviations.length) {
    const first = decoded.deviations[0];
    const offset = first.offset ?? end;
    const message = `Paycode collection code breaks the spec: ${first.rule}: ${first.message}`;
    throw new EmvFormatError(message, offset);
  }
  const merchant = template.child('01');
  if (merchant === null) {
    throw new EmvFormatError('Paycode template has no merchant id (26/01)', template.offset);
  }
  const found = readCurrency(decoded);
  const amountText = readAmount(decoded, found);
  const reference = childValue(decoded.find('62'), '05');
  if (reference !== null && amountText === null) {
    throw new EmvFormatError('a static collection code carries an order reference', end);
  }
  const token = template.child('03');
  if (token !== null && (amountText === null || token.size !== ORDER_TOKEN_CHARS)) {
    throw new EmvFormatError('an order token needs an amount and 24 characters', token.offset);
  }
  const language = decoded.find('64');
  const merchantName = decoded.value('59') ?? '';
  const merchantCity = decoded.value('60') ?? '';
  const localName = childValue(language, '01');
  const localCity = childValue(language, '02');
  return {
    merchantId: merchant.value,
    terminalId: childValue(template, '02'),
    orderToken: token === null ? null : token.value,
    amountText,
    currency: found.alpha,
    currencyNumeric: found.numeric,
    merchantName,
    merchantCity,
    countryCode: decoded.value('58') ?? '',
    mcc: decoded.value('52') ?? '',
    language: childValue(language, '00'),
    localName,
    localCity,
    displayName: localName || merchantName,
    displayCity: localCity || merchantCity,
    initiation: amountText === null ? 'static' : 'dynamic',
    merchantOrderId: reference,
    signature: readSignature(payload, decoded),
    payload,
  };
}
