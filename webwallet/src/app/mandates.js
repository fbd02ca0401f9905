// What the wallet screen says of a points mandate (docs/api.md, "Points mandates"): the rate,
// the caps, today's use, the expiry and the status, as text. Pure (no DOM, no network), so the
// sentences are tested in Node; the panel (mandates_panel.js) only places them.
import { formatAmount } from '../core/index.js';
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
