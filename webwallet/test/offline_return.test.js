// Handing an offline allowance back from the phone (docs/offline.md §2.4), without a server:
// the report sent is the wallet's own (per certificate: id, codes made, money reserved), the
// keys are gone from storage before the request leaves, an unanswered hand-back is sent again
// with the same Idempotency-Key, and an answer of any kind ends it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApiProblem } from '../src/app/api.js';
import {
  OfflineAllowances, allowanceRecord, currentAllowance, forgotten, handBackReport, newAllowanceRequest,
  pendingReturns, returnAnswered, returningRecord,
} from '../src/app/offline.js';
import { b64encode, bytesToHex, hexToBytes } from '../src/core/bytes.js';
import { offlineKeyId, signCertificate } from '../src/core/offline.js';
import { chooseCertificate } from '../src/core/offlineAllowance.js';
import { rejectsWith, readVectors } from './helpers.js';

const VECTORS = readVectors('offline.json');
const SERVER_SEED = hexToBytes(VECTORS.server.seed);
const SERVER_PUBLIC = hexToBytes(VECTORS.server.public_key);
const NOW_S = VECTORS.codes[0].unix_time;
const FIELDS = VECTORS.certificate.fields;
const ALLOWANCE_ID = 'alw_00112233445566aa';

/** A stored 100.00 CNY allowance (four certificates of 25.00) after codes of 12.50 and 5.00. */
async function spentRecord() {
  const request = await newAllowanceRequest('dev_web', 10000, 'CNY');
  const serverKeyId = await offlineKeyId(SERVER_PUBLIC);
  const certificates = [];
  for (const [i, key] of request.keys.entries()) {
    const fields = {
      certId: Uint8Array.from({ length: 16 }, () => 0x10 + i), serverKeyId, offlinePk: key.publicKeyRaw,
      currency: 'CNY', perPaymentCapMinor: 2500, totalCapMinor: 2500, countMax: 16,
      notBeforeS: FIELDS.not_before_s, expiryS: FIELDS.expiry_s,
    };
    certificates.push(b64encode(await signCertificate(fields, SERVER_SEED)));
  }
  const answer = {
    allowance_id: ALLOWANCE_ID, amount_minor: 10000, currency: 'CNY', expires_at_s: FIELDS.expiry_s,
    returns_at_s: FIELDS.expiry_s + 259200, certificates, balance_minor: 10000,
  };
  let record = allowanceRecord(answer, request, { user: 'alice', nowS: NOW_S });
  for (const amountMinor of [1250, 500]) record = chooseCertificate(record, { amountMinor, nowS: NOW_S }).allowance;
  return record;
}

class MemoryStore {
  constructor(records) { this.records = new Map(records.map((r) => [r.allowance_id, r])); }
  async allowances() { return [...this.records.values()]; }
  async updateAllowance(id, change) {
    const record = this.records.get(id);
    if (!record) return false;
    this.records.set(id, change(record));
    return true;
  }
  async removeAllowances(drop) {
    const gone = [...this.records.values()].filter(drop).map((r) => r.allowance_id);
    for (const id of gone) this.records.delete(id);
    return gone;
  }
}

/** A wallet whose API calls `answer(request, storedAtSend)`. */
function fakeWallet(store, answer) {
  const sent = [];
  const wallet = {
    store, meta: { user: 'alice' }, deviceNowS: () => NOW_S,
    signer: () => ({ device_id: 'dev_web', credential: null }),
    api: {
      async signed(signer, method, path, { body, idempotencyKey }) {
        const request = { method, path, body, idempotencyKey };
        sent.push(request);
        return answer(request, structuredClone([...store.records.values()]));
      },
    },
  };
  wallet.offline = new OfflineAllowances(wallet);
  return { wallet, sent };
}

test('the report names each certificate once, with the codes made and the money they reserved', async () => {
  const record = await spentRecord();
  assert.deepEqual(handBackReport(record), [
    { cert_id: bytesToHex(new Uint8Array(16).fill(0x10)), counters_used: 1, reserved_minor: 1250 },
    { cert_id: bytesToHex(new Uint8Array(16).fill(0x11)), counters_used: 1, reserved_minor: 500 },
    { cert_id: bytesToHex(new Uint8Array(16).fill(0x12)), counters_used: 0, reserved_minor: 0 },
    { cert_id: bytesToHex(new Uint8Array(16).fill(0x13)), counters_used: 0, reserved_minor: 0 },
  ]);
  const returning = returningRecord(record, 'key-1');
  assert.deepEqual(returning.certificates, [], 'no certificate, no key is kept');
  assert.ok(!JSON.stringify(Object.keys(returning)).includes('seed'));
  assert.deepEqual(returning.returning, { idempotencyKey: 'key-1', certificates: handBackReport(record) });
  assert.equal(returningRecord(returning, 'key-2'), returning, 'a hand-back begun keeps its key and report');
  assert.equal(currentAllowance([returning], 'alice', NOW_S), null, 'a returning allowance spends nothing');
  assert.deepEqual(pendingReturns([returning, record], 'alice'), [returning]);
  assert.deepEqual(pendingReturns([returning], 'bob'), []);
  assert.equal(forgotten(record, FIELDS.expiry_s), true);
  assert.equal(forgotten(returning, FIELDS.expiry_s), false, 'an unanswered hand-back outlives the expiry');
  assert.equal(forgotten(returning, returning.returns_at_s), true, 'until the server swept the allowance');
});

test('the keys are deleted before the hand-back is sent, and the answer ends it', async () => {
  const record = await spentRecord();
  const store = new MemoryStore([record]);
  const { wallet, sent } = fakeWallet(store, (request, stored) => {
    assert.equal(stored.length, 1);
    assert.deepEqual(stored[0].certificates, [], 'the keys were gone when the request left');
    assert.equal(stored[0].returning.idempotencyKey, request.idempotencyKey);
    return { allowance_id: ALLOWANCE_ID, state: 'returned', returned_minor: 8250, held_minor: 1750, balance_minor: 18250 };
  });
  const answers = await wallet.offline.handBack();
  assert.deepEqual(answers, [{
    allowance_id: ALLOWANCE_ID, state: 'returned', returned_minor: 8250, held_minor: 1750, balance_minor: 18250, currency: 'CNY',
  }]);
  assert.equal(sent.length, 1);
  assert.equal(sent[0].method, 'POST');
  assert.equal(sent[0].path, `/v1/wallet/offline/allowances/${ALLOWANCE_ID}/return`);
  assert.deepEqual(sent[0].body, { certificates: handBackReport(record) });
  assert.deepEqual(await store.allowances(), []);
  await rejectsWith(assert, wallet.offline.handBack(), 'offline_none');
});

test('an unanswered hand-back is sent again as it was; a refusal ends it', async () => {
  const store = new MemoryStore([await spentRecord()]);
  let reply = () => { throw new ApiProblem('server_unreachable', 0, 'no line'); };
  const { wallet, sent } = fakeWallet(store, () => reply());
  await rejectsWith(assert, wallet.offline.handBack(), 'server_unreachable');
  assert.equal((await wallet.offline.pendingReturns()).length, 1, 'kept for the next attempt');
  assert.equal(await wallet.offline.current(), null);
  reply = () => { throw new ApiProblem('idempotency_in_progress', 409, 'busy'); };
  await rejectsWith(assert, wallet.offline.handBack(), 'idempotency_in_progress');
  reply = () => { throw new ApiProblem('allowance_not_live', 422, 'already handed back'); };
  await rejectsWith(assert, wallet.offline.handBack(), 'allowance_not_live');
  assert.equal(sent.length, 3);
  assert.equal(new Set(sent.map((request) => request.idempotencyKey)).size, 1, 'one request, retried');
  assert.deepEqual(sent[2].body, sent[0].body);
  assert.deepEqual(await store.allowances(), [], 'an answer, a refusal too, ends the hand-back');
  assert.equal(returnAnswered(new ApiProblem('rate_limited', 429, '')), false);
  assert.equal(returnAnswered(new ApiProblem('internal_error', 500, '')), false);
  assert.equal(returnAnswered(new ApiProblem('not_found', 404, '')), true);
});
