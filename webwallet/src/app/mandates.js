// What the wallet screen says of a points mandate (docs/api.md, "Points mandates"): the rate,
// the caps, today's use, the expiry and the status, as text; and the consent a binding form
// asks the phone to sign. Pure (no DOM, no network), so both are tested in Node; the panel
// (mandates_panel.js) only places them.
import { POINTS_ASSET, formatAmount, parseAmount } from '../core/index.js';
import { LANGUAGE, t } from './i18n.js';

export const STATUSES = Object.freeze(['active', 'revoked', 'expired']);

/** A whole number of points with the language's digit grouping ("12,000"). */
export function pointsText(points, language = LANGUAGE) {
  return new Intl.NumberFormat(language, { maximumFractionDigits: 0 }).format(points);
}

/** "1.00 CNY" for 100 minor units of CNY; a currency this wallet does not know is shown in
 * minor units rather than guessed at (the rate is never rounded or scaled here). */
export function minorText(amountMinor, currency) {
  try {
    return `${formatAmount({ amountMinor, currency })} ${currency}`;
  } catch {
    return `${amountMinor} (${currency} minor units)`;
  }
}

/** The date a mandate ends (or ended), in the language, without the time of day. */
export function dateText(unixS, language = LANGUAGE) {
  return new Date(unixS * 1000).toLocaleDateString(language, { year: 'numeric', month: 'short', day: 'numeric' });
}

/** The lines a mandate is shown with; `translate` and `date` default to the page's language. */
export function mandateView(item, { translate = t, date = dateText, language = LANGUAGE } = {}) {
  const points = (value) => pointsText(value, language);
  const status = STATUSES.includes(item.status) ? item.status : 'expired';
  let until = translate('mandate_until', { when: date(item.expires_at_s) });
  if (status === 'revoked' && item.revoked_at_s != null) until = translate('mandate_revoked_on', { when: date(item.revoked_at_s) });
  if (status === 'expired') until = translate('mandate_expired_on', { when: date(item.expires_at_s) });
  return {
    merchant: item.merchant,
    status,
    statusText: translate(`mandate_status_${status}`),
    active: status === 'active',
    rate: translate('mandate_rate', { points: points(item.rate_points), amount: minorText(item.rate_minor, item.currency) }),
    caps: translate('mandate_caps', { payment: points(item.cap_per_payment_points), day: points(item.cap_per_day_points) }),
    // What is left today means nothing once no deduction can pass.
    today: status === 'active' ? translate('mandate_today', { used: points(item.used_today_points), left: points(item.left_today_points) }) : '',
    until,
  };
}

/** The list after a revocation: the server's answer for that mandate replaces the one shown. */
export function withAnswer(items, answer) {
  return items.map((item) => (item.mandate_id === answer.mandate_id ? answer : item));
}

// -- binding a shop: the form's fields to the consent the phone signs --------------------------

export const RATE_TERM_MAX = 10 ** 6;
export const POINTS_MAX = 10 ** 12;
export const DAYS_MAX = 730;
export const DAY_S = 86_400;
const ID_CHARS_MAX = 32;
const REFERENCE_CHARS_MAX = 64;
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/** A form field the wallet refuses before anything is signed or sent: `key` is the message's
 * i18n key, `values` its placeholders, `field` the input to focus. */
export class FormProblem extends Error {
  constructor(field, key, values = {}) {
    super(key);
    this.field = field;
    this.key = key;
    this.values = values;
  }
}

function count(text, field, maximum) {
  const trimmed = String(text ?? '').trim();
  if (!/^[0-9]{1,13}$/.test(trimmed)) throw new FormProblem(field, 'mandate_form_count', { max: pointsText(maximum) });
  const value = Number(trimmed);
  if (value < 1 || value > maximum) throw new FormProblem(field, 'mandate_form_count', { max: pointsText(maximum) });
  return value;
}

/**
 * The consent (shared/paycode/shared/points.py, Consent) for the form's text fields
 * {merchant_id, rate_points, rate_amount, cap_per_payment_points, cap_per_day_points, days,
 * reference}: the rate's amount is a decimal in `currency` (the balance's: a shop takes only
 * its own currency), the expiry `days` whole days after the server's `nowS`.
 */
export function consentFromForm(form, { deviceId, currency: currencyCode, nowS }) {
  const merchantId = String(form.merchant_id ?? '').trim();
  if (!merchantId || merchantId.length > ID_CHARS_MAX || !PRINTABLE_ASCII.test(merchantId)) {
    throw new FormProblem('merchant_id', 'mandate_form_merchant');
  }
  const ratePoints = count(form.rate_points, 'rate_points', RATE_TERM_MAX);
  let rateMinor;
  try {
    rateMinor = parseAmount(String(form.rate_amount ?? '').trim(), currencyCode).amountMinor;
  } catch {
    rateMinor = 0;
  }
  if (rateMinor < 1 || rateMinor > RATE_TERM_MAX) {
    throw new FormProblem('rate_amount', 'mandate_form_amount', { currency: currencyCode, max: minorText(RATE_TERM_MAX, currencyCode) });
  }
  const perPayment = count(form.cap_per_payment_points, 'cap_per_payment_points', POINTS_MAX);
  const perDay = count(form.cap_per_day_points, 'cap_per_day_points', POINTS_MAX);
  if (perPayment > perDay) throw new FormProblem('cap_per_payment_points', 'mandate_form_caps');
  const days = count(form.days, 'days', DAYS_MAX);
  const reference = String(form.reference ?? '').trim();
  if (reference.length > REFERENCE_CHARS_MAX || !PRINTABLE_ASCII.test(reference)) {
    throw new FormProblem('reference', 'mandate_form_reference', { max: REFERENCE_CHARS_MAX });
  }
  return {
    merchant_id: merchantId,
    asset: POINTS_ASSET,
    currency: currencyCode,
    rate_points: ratePoints,
    rate_minor: rateMinor,
    cap_per_payment_points: perPayment,
    cap_per_day_points: perDay,
    expires_at_s: Math.floor(nowS) + days * DAY_S,
    device_id: deviceId,
    reference,
  };
}

/** POST /v1/wallet/mandates's body: the consent without the device id (the server takes the
 * calling device's), and the signature over consentMessage(consent). */
export function bindingBody(consent, signature) {
  const { device_id: _signedByCaller, ...fields } = consent;
  return { ...fields, signature };
}

/** What to send for the form `fields` (a plain object of its text, the currency and the
 * signing device included): the attempt already made when the form is unchanged and its answer
 * never came, so the retry carries the same consent and Idempotency-Key and the server binds
 * once; otherwise `make()`'s new {consent, idempotencyKey}. */
export function bindingAttempt(unanswered, fields, make) {
  const form = JSON.stringify(Object.entries(fields).sort());
  if (unanswered && unanswered.form === form) return unanswered;
  return { form, ...make() };
}

/** Whether a failed binding may have been stored without the page hearing so: no answer
 * (network, timeout) or a server error. A 4xx answer is final: nothing was stored. */
export function answerMayBeLost(error) {
  return !(error && Number.isInteger(error.status) && error.status >= 400 && error.status < 500);
}
