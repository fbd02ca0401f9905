// What the wallet screen says of a points mandate (src/app/mandates.js), in both languages,
// from items shaped as GET /v1/wallet/mandates answers them (server/paycode/server/points/
// mandates.py, mandate_json).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { TABLES } from '../src/app/i18n.js';
import {
  DAY_S as FORM_DAY_S, FormProblem, answerMayBeLost, bindingAttempt, bindingBody, consentFromForm, mandateView, minorText,
  pointsText, withAnswer,
} from '../src/app/mandates.js';
import { ApiProblem } from '../src/app/api.js';
import { consentMessage } from '../src/core/mandateConsent.js';
import { readVectors } from './helpers.js';

const DAY_S = 86_400;
const EXPIRES_AT_S = Date.UTC(2027, 0, 15, 12) / 1000;

function translator(table) {
  return (key, values = {}) => table[key].replace(/\{(\w+)\}/g, (_, name) => String(values[name]));
}

const isoDate = (unixS) => new Date(unixS * 1000).toISOString().slice(0, 10);

function item(changes = {}) {
  return {
    mandate_id: 'mdt_0123456789abcdef', merchant_id: 'mch_0123456789abcdef', merchant: 'Green Tea House',
    asset: 'PTS', currency: 'CNY', rate_points: 100, rate_minor: 100,
    cap_per_payment_points: 500, cap_per_day_points: 800, used_today_points: 300, left_today_points: 500,
    used_points: 1300, reference: 'member-42', status: 'active',
    created_at_s: EXPIRES_AT_S - 30 * DAY_S, expires_at_s: EXPIRES_AT_S, revoked_at_s: null,
    ...changes,
  };
}

const EN = { translate: translator(TABLES.en), date: isoDate, language: 'en' };
const ZH = { translate: translator(TABLES['zh-CN']), date: isoDate, language: 'zh-CN' };

test('an active mandate: rate in the currency, both caps, today’s use, the end date', () => {
  assert.deepEqual(mandateView(item(), EN), {
    merchant: 'Green Tea House',
    status: 'active',
    statusText: 'active',
    active: true,
    rate: '100 points = 1.00 CNY',
    caps: 'Up to 500 points a payment, 800 points a day',
    today: 'Today: 300 points used, 500 left',
    until: 'Until 2027-01-15',
  });
});

test('the same mandate in Chinese', () => {
  const view = mandateView(item(), ZH);
  assert.equal(view.rate, '100 积分 = 1.00 CNY');
  assert.equal(view.caps, '每笔最多 500 积分，每天最多 800 积分');
  assert.equal(view.today, '今日：已用 300 积分，剩余 500');
  assert.equal(view.statusText, '有效');
  assert.equal(view.until, '有效至 2027-01-15');
});

test('rates are exact: any points to any minor units, never rounded', () => {
  assert.equal(mandateView(item({ rate_points: 1, rate_minor: 1 }), EN).rate, '1 points = 0.01 CNY');
  assert.equal(mandateView(item({ rate_points: 3, rate_minor: 7 }), EN).rate, '3 points = 0.07 CNY');
  assert.equal(mandateView(item({ rate_points: 1000000, rate_minor: 123456 }), EN).rate, '1,000,000 points = 1234.56 CNY');
  assert.equal(mandateView(item({ currency: 'JPY', rate_points: 10, rate_minor: 1 }), EN).rate, '10 points = 1 JPY');
  assert.equal(mandateView(item({ currency: 'KWD', rate_points: 10, rate_minor: 5 }), EN).rate, '10 points = 0.005 KWD');
  // A currency this wallet does not know: its minor units, not a guess at its decimals.
  assert.equal(minorText(250, 'XYZ'), '250 (XYZ minor units)');
});

test('points are whole numbers with digit grouping, largest caps included', () => {
  assert.equal(pointsText(0, 'en'), '0');
  assert.equal(pointsText(12000, 'en'), '12,000');
  assert.equal(pointsText(10 ** 12, 'en'), '1,000,000,000,000');
  const view = mandateView(item({ cap_per_payment_points: 10 ** 12, cap_per_day_points: 10 ** 12, used_today_points: 0, left_today_points: 10 ** 12 }), EN);
  assert.equal(view.caps, 'Up to 1,000,000,000,000 points a payment, 1,000,000,000,000 points a day');
  assert.equal(view.today, 'Today: 0 points used, 1,000,000,000,000 left');
});

test('revoked and expired mandates say when, offer no revoke, and show no use left today', () => {
  const revokedAtS = EXPIRES_AT_S - 10 * DAY_S;
  const revoked = mandateView(item({ status: 'revoked', revoked_at_s: revokedAtS }), EN);
  assert.deepEqual([revoked.status, revoked.statusText, revoked.active, revoked.today, revoked.until], ['revoked', 'revoked', false, '', 'Revoked on 2027-01-05']);
  const expired = mandateView(item({ status: 'expired' }), EN);
  assert.deepEqual([expired.status, expired.statusText, expired.active, expired.today, expired.until], ['expired', 'expired', false, '', 'Expired on 2027-01-15']);
  assert.equal(mandateView(item({ status: 'revoked', revoked_at_s: revokedAtS }), ZH).until, '已于 2027-01-05 撤销');
  assert.equal(mandateView(item({ status: 'expired' }), ZH).statusText, '已过期');
});

test('a status this wallet does not know is never shown as active', () => {
  const view = mandateView(item({ status: 'suspended' }), EN);
  assert.equal(view.active, false);
  assert.equal(view.status, 'expired');
});

test('after a revocation the server’s answer replaces that mandate, the others stay', () => {
  const first = item();
  const second = item({ mandate_id: 'mdt_other', merchant: 'Noodle Bar' });
  const answer = item({ status: 'revoked', revoked_at_s: EXPIRES_AT_S - DAY_S });
  const after = withAnswer([first, second], answer);
  assert.deepEqual(after, [answer, second]);
  assert.deepEqual(withAnswer([second], answer), [second]);
});

// -- the binding form -------------------------------------------------------------------------

const FORM = {
  merchant_id: ' mch_0000000000000001 ', rate_points: '100', rate_amount: '1.00',
  cap_per_payment_points: '500', cap_per_day_points: '800', days: '30', reference: '',
};
const NOW_S = 1_800_000_000 - 30 * DAY_S + 0.75;
const CONTEXT = { deviceId: 'dev_0000000000000001', currency: 'CNY', nowS: NOW_S };

function problem(changes, context = CONTEXT) {
  try {
    consentFromForm({ ...FORM, ...changes }, context);
  } catch (error) {
    assert.ok(error instanceof FormProblem, String(error));
    assert.ok(error.key in TABLES.en && error.key in TABLES['zh-CN'], error.key);
    return [error.field, error.key, error.values];
  }
  assert.fail(`accepted ${JSON.stringify(changes)}`);
}

test('the form becomes the consent the Python reference signs (the vector, byte for byte)', () => {
  assert.equal(FORM_DAY_S, DAY_S);
  const consent = consentFromForm(FORM, CONTEXT);
  const vector = readVectors('mandate_consent.json').vectors.find((v) => v.name === 'no reference');
  assert.deepEqual(consent, vector.consent);
  assert.equal(new TextDecoder().decode(consentMessage(consent)), vector.message);
  const withReference = consentFromForm({ ...FORM, reference: ' member-42 ' }, CONTEXT);
  assert.equal(withReference.reference, 'member-42');
});

test('the rate’s amount is exact minor units of the balance’s currency', () => {
  assert.equal(consentFromForm({ ...FORM, rate_amount: '0.07', rate_points: '3' }, CONTEXT).rate_minor, 7);
  assert.equal(consentFromForm({ ...FORM, rate_amount: '10000' }, CONTEXT).rate_minor, 1_000_000);
  assert.equal(consentFromForm({ ...FORM, rate_amount: '5' }, { ...CONTEXT, currency: 'JPY' }).rate_minor, 5);
  for (const amount of ['', '0', '0.001', '1,00', '-1', '10000.01', '1e2', ' ']) {
    assert.deepEqual(problem({ rate_amount: amount }).slice(0, 2), ['rate_amount', 'mandate_form_amount'], amount);
  }
  assert.deepEqual(problem({ rate_amount: '1.5' }, { ...CONTEXT, currency: 'JPY' })[2], { currency: 'JPY', max: '1000000 JPY' });
});

test('counts are whole numbers in range, and the per-payment cap is within the day’s', () => {
  for (const text of ['', '0', '1.5', '-3', '1e3', '١٢', '1000001']) {
    assert.deepEqual(problem({ rate_points: text }).slice(0, 2), ['rate_points', 'mandate_form_count'], text);
  }
  assert.deepEqual(problem({ cap_per_day_points: '1000000000001' }), ['cap_per_day_points', 'mandate_form_count', { max: '1,000,000,000,000' }]);
  assert.deepEqual(problem({ days: '731' }), ['days', 'mandate_form_count', { max: '730' }]);
  assert.deepEqual(problem({ cap_per_payment_points: '900' }).slice(0, 2), ['cap_per_payment_points', 'mandate_form_caps']);
  const largest = consentFromForm({ ...FORM, cap_per_payment_points: '1000000000000', cap_per_day_points: '1000000000000', days: '730' }, CONTEXT);
  assert.equal(largest.cap_per_day_points, 10 ** 12);
  assert.equal(largest.expires_at_s, Math.floor(NOW_S) + 730 * DAY_S);
});

test('the shop id and the customer number are printable ASCII the server accepts', () => {
  for (const id of ['', '   ', 'm'.repeat(33), 'mch_é', 'mch\t1']) {
    assert.deepEqual(problem({ merchant_id: id }).slice(0, 2), ['merchant_id', 'mandate_form_merchant'], id);
  }
  for (const reference of ['r'.repeat(65), '会员', 'a\nb']) {
    assert.deepEqual(problem({ reference }), ['reference', 'mandate_form_reference', { max: 64 }], reference);
  }
});

test('the body sent is the consent without the device id (the caller’s), plus the signature', () => {
  const consent = consentFromForm(FORM, CONTEXT);
  const body = bindingBody(consent, 'c2lnbmF0dXJl');
  assert.deepEqual(Object.keys(body).sort(), [
    'asset', 'cap_per_day_points', 'cap_per_payment_points', 'currency', 'expires_at_s',
    'merchant_id', 'rate_minor', 'rate_points', 'reference', 'signature',
  ]);
  assert.equal(body.signature, 'c2lnbmF0dXJl');
  assert.equal(consent.device_id, 'dev_0000000000000001'); // the consent itself is unchanged
});

test('a binding whose answer was lost is resent unchanged (same consent and key); a changed form is new', () => {
  let made = 0;
  const make = () => { made += 1; return { consent: consentFromForm(FORM, { ...CONTEXT, nowS: NOW_S + made }), idempotencyKey: `key-${made}` }; };
  const fields = { ...FORM, currency: 'CNY', device: 'dev_0000000000000001' };
  const first = bindingAttempt(null, fields, make);
  // The retry comes later (a later expiry if it were rebuilt) but the fields are the same.
  const again = bindingAttempt(first, { device: fields.device, ...fields }, make);
  assert.equal(again, first);
  assert.equal(made, 1);
  const changed = bindingAttempt(first, { ...fields, cap_per_day_points: '900' }, make);
  assert.notEqual(changed.idempotencyKey, first.idempotencyKey);
  const otherDevice = bindingAttempt(first, { ...fields, device: 'dev_other' }, make);
  assert.notEqual(otherDevice.idempotencyKey, first.idempotencyKey);
  assert.equal(made, 3);
});

test('only a 4xx answer is final: no answer or a server error may hide a stored binding', () => {
  assert.equal(answerMayBeLost(new ApiProblem('server_unreachable', 0, 'offline')), true);
  assert.equal(answerMayBeLost(new ApiProblem('internal_error', 500, 'boom')), true);
  assert.equal(answerMayBeLost(new ApiProblem('http_502', 502, 'Bad Gateway')), true);
  assert.equal(answerMayBeLost(new TypeError('x')), true);
  for (const [code, status] of [['not_found', 404], ['mandate_invalid', 400], ['currency_mismatch', 409], ['mandate_signature_invalid', 422], ['rate_limited', 429]]) {
    assert.equal(answerMayBeLost(new ApiProblem(code, status, code)), false, code);
  }
});
