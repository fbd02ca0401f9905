// The app's side of the offline allowance (docs/offline.md §2.1, §3.5), without a server: the
// request's keys and proofs, the checks on the server's answer, and a code spent from the
// stored record that the till check accepts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ed25519 } from '@noble/curves/ed25519.js';
import { ApiProblem } from '../src/app/api.js';
import {
  allowanceBody, allowanceRecord, allowanceSummary, currentAllowance, finalRefusal, newAllowanceRequest,
} from '../src/app/offline.js';
import { b64encode, b64urlDecode, hexToBytes } from '../src/core/bytes.js';
import { importEd25519Public } from '../src/core/keys.js';
import { offlineKeyProofMessage } from '../src/core/keyProof.js';
import { offlineKeyId, parseCertificate, signCertificate, verifyOffline } from '../src/core/offline.js';
import { chooseCertificate, offlineCode } from '../src/core/offlineAllowance.js';
import { parseOffline } from '../src/core/v4Offline.js';
import { readVectors } from './helpers.js';

const VECTORS = readVectors('offline.json');
const SERVER_SEED = hexToBytes(VECTORS.server.seed);
const SERVER_PUBLIC = hexToBytes(VECTORS.server.public_key);
const SERVER_KEYS = new Map([[VECTORS.server.key_id, SERVER_PUBLIC]]);
const NOW_S = VECTORS.codes[0].unix_time;
const FIELDS = VECTORS.certificate.fields;

/** What the server answers: one certificate per key of the request, in `order`. */
async function serverAnswer(request, { order = [0, 1, 2, 3], totalCapMinor = 12500, currency = 'CNY', keyOf = (i) => request.keys[i].publicKeyRaw } = {}) {
  const serverKeyId = await offlineKeyId(SERVER_PUBLIC);
  const certificates = [];
  for (const i of order) {
    const fields = {
      certId: Uint8Array.from({ length: 16 }, () => 0x40 + i),
      serverKeyId,
      offlinePk: keyOf(i),
      currency,
      perPaymentCapMinor: Math.min(10000, totalCapMinor),
      totalCapMinor,
      countMax: 16,
      notBeforeS: FIELDS.not_before_s,
      expiryS: FIELDS.expiry_s,
    };
    certificates.push(b64encode(await signCertificate(fields, SERVER_SEED)));
  }
  return {
    allowance_id: 'alw_0123456789abcdef', amount_minor: request.amountMinor, currency: request.currency,
    expires_at_s: FIELDS.expiry_s, returns_at_s: FIELDS.expiry_s + 259200, certificates, balance_minor: 38000,
  };
}

test('a request carries four fresh keys, each proven for this device and Idempotency-Key', async () => {
  const request = await newAllowanceRequest('dev_web', 50000, 'CNY');
  const other = await newAllowanceRequest('dev_web', 50000, 'CNY');
  assert.notEqual(request.idempotencyKey, other.idempotencyKey);
  const body = allowanceBody(request, '135790');
  assert.deepEqual(Object.keys(body).sort(), ['amount_minor', 'currency', 'keys', 'pin']);
  assert.equal(body.amount_minor, 50000);
  assert.equal(body.keys.length, 4);
  assert.equal(new Set(body.keys.map((key) => key.public_key)).size, 4);
  for (const [i, key] of body.keys.entries()) {
    const publicKey = b64urlDecode(key.public_key);
    assert.equal(publicKey.length, 32);
    const proof = b64urlDecode(key.proof);
    const verifier = await importEd25519Public(publicKey);
    const verify = (index) => globalThis.crypto.subtle.verify({ name: 'Ed25519' }, verifier, proof, offlineKeyProofMessage(publicKey, 'dev_web', request.idempotencyKey, index));
    assert.equal(await verify(i), true);
    assert.equal(await verify((i + 1) % 4), false);
    assert.equal(request.keys[i].privateKey.extractable, false, 'the offline keys never leave the phone');
  }
  assert.ok(!JSON.stringify(request.keys.map((key) => key.proof)).includes('135790'), 'the PIN is not kept');
});

test('the answer becomes a stored allowance whose codes a till accepts', async () => {
  const request = await newAllowanceRequest('dev_web', 50000, 'CNY');
  const answer = await serverAnswer(request, { order: [2, 0, 3, 1] });
  let record = allowanceRecord(answer, request, { user: 'alice', nowS: NOW_S });
  assert.equal(record.allowance_id, 'alw_0123456789abcdef');
  assert.equal(record.lastIndex, -1);
  assert.deepEqual(record.certificates.map((c) => [c.nextCounter, c.reservedMinor]), Array(4).fill([0, 0]));
  for (const [i, entry] of record.certificates.entries()) {
    assert.equal(entry.cert, answer.certificates[i]);
    assert.equal(entry.seed, request.keys[[2, 0, 3, 1][i]].privateKey, 'each certificate is paired with its own key');
  }
  assert.deepEqual(allowanceSummary(record, NOW_S), { leftMinor: 50000, codes: 64, totalMinor: 50000 });
  for (let i = 0; i < 5; i++) {
    const choice = chooseCertificate(record, { amountMinor: 1250, nowS: NOW_S });
    record = choice.allowance;
    const code = parseOffline(await offlineCode(choice, { nowS: NOW_S }));
    const verdict = await verifyOffline(code, { serverKeys: SERVER_KEYS, nowS: NOW_S, currency: 'CNY' });
    assert.equal(verdict.accepted, true, `code ${i}`);
    assert.equal(code.payment.counter, i === 4 ? 1 : 0);
  }
  assert.deepEqual(allowanceSummary(record, NOW_S), { leftMinor: 50000 - 5 * 1250, codes: 59, totalMinor: 50000 });
});

test('an answer that does not match the request is refused whole', async () => {
  const request = await newAllowanceRequest('dev_web', 50000, 'CNY');
  const stranger = ed25519.getPublicKey(Uint8Array.from({ length: 32 }, (_, i) => i + 3));
  const good = await serverAnswer(request);
  const cases = {
    'a foreign key': await serverAnswer(request, { keyOf: (i) => (i === 3 ? stranger : request.keys[i].publicKeyRaw) }),
    'one key twice': await serverAnswer(request, { keyOf: (i) => request.keys[Math.min(i, 2)].publicKeyRaw }),
    'another currency': await serverAnswer(request, { currency: 'USD' }),
    'caps above the amount': await serverAnswer(request, { totalCapMinor: 12501 }),
    'three certificates': { ...good, certificates: good.certificates.slice(1) },
    'a malformed certificate': { ...good, certificates: [good.certificates[0].slice(4), ...good.certificates.slice(1)] },
    'another amount': { ...good, amount_minor: 20000 },
    'no allowance id': { ...good, allowance_id: '' },
    'no expiry': { ...good, expires_at_s: 'soon' },
  };
  for (const [name, answer] of Object.entries(cases)) {
    assert.throws(() => allowanceRecord(answer, request, { user: 'alice', nowS: NOW_S }), (error) => error.code === 'allowance_invalid', name);
  }
  assert.equal(parseCertificate(good.certificates[0]).fields.totalCapMinor, 12500);
});

test('the allowance spent is this user\'s newest live one; refusals drop the request, lost answers keep it', () => {
  const records = [
    { allowance_id: 'a', user: 'alice', expires_at_s: 1000, taken_at_s: 10 },
    { allowance_id: 'b', user: 'alice', expires_at_s: 2000, taken_at_s: 20 },
    { allowance_id: 'c', user: 'bob', expires_at_s: 3000, taken_at_s: 30 },
    { allowance_id: 'd', user: 'alice', expires_at_s: 900, taken_at_s: 40 },
  ];
  assert.equal(currentAllowance(records, 'alice', 500).allowance_id, 'd');
  assert.equal(currentAllowance(records, 'alice', 950).allowance_id, 'b');
  assert.equal(currentAllowance(records, 'alice', 2000), null);
  assert.equal(currentAllowance(records, 'carol', 0), null);
  assert.equal(finalRefusal(new ApiProblem('pin_invalid', 422, 'wrong PIN')), true);
  assert.equal(finalRefusal(new ApiProblem('offline_allowance_live', 422, '')), true);
  assert.equal(finalRefusal(new ApiProblem('server_unreachable', 0, '')), false);
  assert.equal(finalRefusal(new ApiProblem('idempotency_in_progress', 409, '')), false);
  assert.equal(finalRefusal(new ApiProblem('internal_error', 500, '')), false);
});
