// Spending an offline allowance (docs/offline.md §3.4, §3.5): which certificate pays the next
// code, and how much of it the code reserves. Pure: the allowance is a plain object, the
// answer a new one the caller stores (counter and reservation in one atomic write) before it
// signs and shows the code, so an honest wallet never lets a certificate pay more than T in
// total nor more than n codes.
//   allowance = {certificates: [{cert, seed, nextCounter, reservedMinor}], lastIndex}
// `cert` is the 137 bytes or their standard base64 (as the server sends them); `seed` the
// 32-byte Ed25519 seed or the non-extractable private CryptoKey; `lastIndex` the certificate
// of the previous code (-1 or absent before the first).
import { PaycodeError, invalidArgument } from './errors.js';
import { FLAG_MERCHANT_BOUND, parseCertificate, signPayment } from './offline.js';
import { stepOf } from './timestep.js';
import { encodeOffline } from './v4Offline.js';

/** `c` of §2.3: certificates per allowance. */
export const CERTIFICATES_PER_ALLOWANCE = 4;

function isCount(value) {
  return Number.isSafeInteger(value) && value >= 0;
}

function entries(allowance) {
  const certificates = allowance?.certificates;
  if (!Array.isArray(certificates) || certificates.length < 1 || certificates.length > 255) {
    throw invalidArgument('an allowance holds 1..255 certificates');
  }
  return certificates.map((entry) => {
    if (!isCount(entry?.nextCounter) || !isCount(entry?.reservedMinor)) {
      throw invalidArgument("an allowance certificate's counter and reservation are counts");
    }
    return { entry, fields: parseCertificate(entry.cert).fields };
  });
}

function inWindow(fields, nowS) {
  return fields.notBeforeS <= nowS && nowS < fields.expiryS;
}

/** What the certificate can still pay with one code: min(p, T - reserved), 0 when its
 * counters are spent. */
function payable(entry, fields) {
  if (entry.nextCounter >= fields.countMax) return 0;
  return Math.max(0, Math.min(fields.perPaymentCapMinor, fields.totalCapMinor - entry.reservedMinor));
}

/**
 * The certificate for the next code: round-robin from the one after `lastIndex`, the first in
 * its window with a counter left that covers the amount. `amountMinor` is what the customer
 * typed; null makes the code's limit min(p, what that certificate has left).
 * Returns {index, counter, amountLimitMinor, allowance} with `allowance` the new state to
 * store (the input is not changed). Throws PaycodeError: `amount_invalid`,
 * `certificate_expired` (no certificate in its window), `offline_limit` (the amount is above
 * every per-payment cap), `offline_exhausted` (no certificate has room left).
 */
export function chooseCertificate(allowance, { amountMinor = null, nowS }) {
  if (amountMinor !== null && (!Number.isSafeInteger(amountMinor) || amountMinor < 1)) {
    throw new PaycodeError('amount_invalid', 'an offline amount is a positive integer of minor units');
  }
  if (typeof nowS !== 'number' || !Number.isFinite(nowS)) throw invalidArgument('nowS is a time');
  const all = entries(allowance);
  const live = all.filter(({ fields }) => inWindow(fields, nowS));
  if (live.length === 0) {
    throw new PaycodeError('certificate_expired', 'the offline allowance is outside its window');
  }
  if (amountMinor !== null && live.every(({ fields }) => amountMinor > fields.perPaymentCapMinor)) {
    throw new PaycodeError('offline_limit', 'the amount is above the offline per-payment cap');
  }
  const last = Number.isSafeInteger(allowance.lastIndex) ? allowance.lastIndex : -1;
  for (let step = 1; step <= all.length; step++) {
    const index = (((last + step) % all.length) + all.length) % all.length;
    const { entry, fields } = all[index];
    const room = payable(entry, fields);
    if (!inWindow(fields, nowS) || room < 1 || (amountMinor !== null && amountMinor > room)) continue;
    const amountLimitMinor = amountMinor ?? room;
    const certificates = allowance.certificates.map((item, i) =>
      i === index
        ? { ...item, nextCounter: item.nextCounter + 1, reservedMinor: item.reservedMinor + amountLimitMinor }
        : item,
    );
    return {
      index,
      counter: entry.nextCounter,
      amountLimitMinor,
      allowance: { ...allowance, certificates, lastIndex: index },
    };
  }
  throw new PaycodeError('offline_exhausted', 'no offline certificate has room for this payment');
}

/** What the allowance can still pay at `nowS`: {amountMinor, codes}, summed over the
 * certificates in their window (the most one code pays is a certificate's min(p, left)). */
export function allowanceLeft(allowance, nowS) {
  let amountMinor = 0;
  let codes = 0;
  for (const { entry, fields } of entries(allowance)) {
    if (!inWindow(fields, nowS) || payable(entry, fields) < 1) continue;
    amountMinor += fields.totalCapMinor - entry.reservedMinor;
    codes += fields.countMax - entry.nextCounter;
  }
  return { amountMinor, codes };
}

/**
 * The v4 code text of a choice made by chooseCertificate, once its new allowance is stored.
 * `binding`: the 32-byte digest (binding.bindingDigest) for a merchant-bound code, else null.
 */
export async function offlineCode(choice, { nowS, binding = null }) {
  const entry = choice.allowance.certificates[choice.index];
  const payment = {
    counter: choice.counter,
    step: stepOf(nowS),
    amountLimitMinor: choice.amountLimitMinor,
    flags: binding ? FLAG_MERCHANT_BOUND : 0,
  };
  const signed = await signPayment(parseCertificate(entry.cert), payment, entry.seed, binding);
  return encodeOffline(signed);
}
