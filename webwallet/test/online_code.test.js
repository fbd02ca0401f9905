// A code issued by the server, online (docs/spec.md §14; docs/api.md, "Codes issued online"):
// the shape of the call the web wallet sends and what it makes of the answer, against a stub
// fetch. tests/server/test_online_codes.py holds the server to the same call.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Api, ApiProblem } from '../src/app/api.js';
import { TABLES } from '../src/app/i18n.js';
import { ONLINE_VERSIONS, Wallet } from '../src/app/wallet.js';
import { hexToBytes, utf8 } from '../src/core/bytes.js';
import { importSymmetricDevice } from '../src/core/keys.js';
import { signingMessage, signRequest } from '../src/core/walletAuth.js';

const DEVICE_KEY = hexToBytes('18f2dfe4820317a9a31bd7bb96f9f83ce1a19e95848a46f4311a07c66d8ecde0');
const HIDING_KEY = new Uint8Array(32).fill(1);
const SERVER_TIME_S = 1796607883.25;
const ANSWER = {
  code: 'PC2ABCDEFGHIJKLMNOPQRSTUVWXYZ234567ABCDEFGH', version: 'v2', issued_online: true,
  user_verified: false, expires_at: '2026-12-07T01:45:30Z', expires_in_s: 46,
  server_time: SERVER_TIME_S, code_keys: [],
};

function clock() {
  let offsetS = 0;
  return { offsetS: () => offsetS, learn: async (serverS, localS) => { offsetS = serverS - localS; } };
}

async function device() {
  const credential = { version: 'v2', handle: new Uint8Array(8), ...(await importSymmetricDevice(DEVICE_KEY, HIDING_KEY)) };
  return { device_id: 'dev_0123456789abcdef', credential };
}

/** fetch that records each request and answers `status` with `body`. */
function stubFetch(sent, status, body) {
  return async (url, init) => {
    sent.push({ url, init });
    return { ok: status < 300, status, statusText: '', json: async () => ({ ...body }) };
  };
}

test('issueCode POSTs {"version"} to /v1/wallet/codes, signed, with an Idempotency-Key', async (t) => {
  const sent = [];
  t.mock.method(globalThis, 'fetch', stubFetch(sent, 201, ANSWER));
  const signer = await device();
  const learned = [];
  const api = new Api(clock(), 'https://pay.example', async (data) => { learned.push(data.code_keys); });
  const data = await api.issueCode(signer, 'v1', 'key-1');
  assert.equal(sent.length, 1);
  const { url, init } = sent[0];
  assert.equal(url, 'https://pay.example/v1/wallet/codes');
  assert.equal(init.method, 'POST');
  assert.equal(init.body, '{"version":"v1"}');
  assert.equal(init.headers['Content-Type'], 'application/json');
  assert.equal(init.headers['Idempotency-Key'], 'key-1');
  assert.equal(init.headers['Paycode-Device'], signer.device_id);
  // The signature is the device's over exactly this method, path, time, nonce and body.
  const message = await signingMessage('POST', '/v1/wallet/codes', Number(init.headers['Paycode-Timestamp']),
    init.headers['Paycode-Nonce'], utf8(init.body));
  assert.equal(init.headers['Paycode-Signature'], await signRequest(signer.credential, message));
  assert.equal(data.code, ANSWER.code);
  assert.deepEqual(learned, [[]], 'the code keys are learned, then dropped');
  assert.equal('code_keys' in data, false);
});

test('Wallet.onlineCode asks v2 for a v3 phone and reads the expiry', async (t) => {
  const sent = [];
  t.mock.method(globalThis, 'fetch', stubFetch(sent, 201, ANSWER));
  const signer = await device();
  const wallet = Object.create(Wallet.prototype);
  wallet.api = new Api(clock());
  wallet.signer = () => signer;
  const code = await wallet.onlineCode('v3');
  assert.deepEqual(ONLINE_VERSIONS, ['v2', 'v1']);
  assert.equal(JSON.parse(sent[0].init.body).version, 'v2');
  assert.deepEqual(code, {
    text: ANSWER.code, version: 'v2', issuedOnline: true, userVerified: false,
    expiresAtS: Date.parse('2026-12-07T01:45:30Z') / 1000,
  });
  await wallet.onlineCode('v1');
  assert.equal(JSON.parse(sent[1].init.body).version, 'v1');
  assert.notEqual(sent[0].init.headers['Idempotency-Key'], sent[1].init.headers['Idempotency-Key']);
});

test('a refusal is an ApiProblem with the server code', async (t) => {
  t.mock.method(globalThis, 'fetch', stubFetch([], 429, { code: 'rate_limited', detail: 'at most 10', server_time: SERVER_TIME_S }));
  await assert.rejects((async () => new Api(clock()).issueCode(await device(), 'v2', 'k'))(), (error) => {
    assert.ok(error instanceof ApiProblem);
    assert.equal(error.code, 'rate_limited');
    return true;
  });
});

test('every language says a server code is issued online', () => {
  for (const table of Object.values(TABLES)) {
    for (const key of ['server_code', 'server_code_note', 'server_code_fallback', 'server_code_expired']) {
      assert.ok(table[key], key);
    }
  }
});
