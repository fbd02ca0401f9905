// docs/api.md, "Wallet request signing". The expected bytes and signatures below were
// computed once with the Python reference (paycode.shared.wallet_auth.signing_message and
// sign) from the test keys named here; tests/webwallet/test_js_core.py cross-checks fresh
// keys and signatures against that reference on every run.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { b64decode, bytesToHex, hexToBytes, utf8 } from '../src/core/bytes.js';
import { importEd25519Public, importEd25519Seed, importSymmetricDevice } from '../src/core/keys.js';
import { signRequest, signedHeaders, signingMessage } from '../src/core/walletAuth.js';
import { rejectsWith } from './helpers.js';

// sha256("paycode webwallet test: device key"), sha256("paycode webwallet test: ed25519 seed")
const DEVICE_KEY = hexToBytes('18f2dfe4820317a9a31bd7bb96f9f83ce1a19e95848a46f4311a07c66d8ecde0');
const SEED = hexToBytes('4fc022fee6bdbfee9fc460331924e869443fae8b5119b5e504b6e79d9b2cf73d');
const HIDING_KEY = new Uint8Array(32).fill(1);

const POST = {
  args: [
    'post',
    '/v1/wallet/payments?x=1',
    1763888400,
    '00112233445566778899aabbccddeeff',
    utf8('{"amount":"12.50"}'),
  ],
  text: 'paycode-wallet-1\nPOST\n/v1/wallet/payments?x=1\n1763888400\n00112233445566778899aabbccddeeff\n' +
    'b8a5fa3ead3a18272ad86f0a4881714cdfa0e918dd5f79de983e59a191f1ec93',
  hmac: 'Ddg2JpZ/+m7kFgcghSD242xyVy6qExRmsEPskfVOMTg=',
  ed25519: 'H2S2RqGSVPifUm5C5l9LeLRKNdMsXrW3/6MQG9D97oyQi4QjOMWD5HruyThEyy+CGgN6/zWtU0LmvwoeIY2gAw==',
};
const GET = {
  args: ['GET', '/v1/wallet/balance', 1763888401, 'ffeeddccbbaa99887766554433221100', new Uint8Array(0)],
  hex: [
    '706179636f64652d77616c6c65742d310a4745540a2f76312f77616c6c65742f62616c616e63650a',
    '313736333838383430310a6666656564646363626261613939383837373636353534343333323231',
    '3130300a653362306334343239386663316331343961666266346338393936666239323432376165',
    '34316534363439623933346361343935393931623738353262383535',
  ].join(''),
  hmac: 'H3rRXsvC25neX6ETnV0xKZ/kxH6mBZAR3k9a1gLVEww=',
};

/** The Ed25519 public key of a seed (through an extractable copy: tests only). */
async function publicOf(seed) {
  const key = await importEd25519Seed(seed, { extractable: true });
  const jwk = await globalThis.crypto.subtle.exportKey('jwk', key);
  return Uint8Array.from(Buffer.from(jwk.x, 'base64url'));
}

async function credentials() {
  const symmetric = await importSymmetricDevice(DEVICE_KEY, HIDING_KEY);
  return {
    v1: { version: 'v1', handle: new Uint8Array(5), ...symmetric },
    v2: { version: 'v2', handle: new Uint8Array(8), ...symmetric },
    v3: { version: 'v3', handle: new Uint8Array(8), signingKey: await importEd25519Seed(SEED) },
  };
}

test('the signing message is the Python reference\'s, byte for byte', async () => {
  const post = await signingMessage(...POST.args);
  assert.equal(new TextDecoder().decode(post), POST.text);
  const get = await signingMessage(...GET.args);
  assert.equal(bytesToHex(get), GET.hex);
  assert.deepEqual(await signingMessage(...GET.args.slice(0, 4), null), get);
  assert.deepEqual(await signingMessage(...GET.args.slice(0, 4), ''), get);
  assert.deepEqual(await signingMessage(...POST.args.slice(0, 4), '{"amount":"12.50"}'), post);
});

test('v1/v2 sign with the derived API key, v3 with Ed25519, as the Python reference', async () => {
  const creds = await credentials();
  const post = await signingMessage(...POST.args);
  assert.equal(await signRequest(creds.v2, post), POST.hmac);
  assert.equal(await signRequest(creds.v1, post), POST.hmac);
  assert.equal(await signRequest(creds.v3, post), POST.ed25519);
  assert.equal(await signRequest(creds.v1, await signingMessage(...GET.args)), GET.hmac);
  // The API key is not the device key: a signature with K_dev itself would differ.
  const raw = await globalThis.crypto.subtle.sign('HMAC', creds.v2.deviceKey, post);
  assert.notEqual(Buffer.from(raw).toString('base64'), POST.hmac);
});

test('signed headers carry the device, an integer timestamp, a fresh nonce, a valid signature', async () => {
  const creds = await credentials();
  const body = utf8('{"amount":"1.00"}');
  const headers = await signedHeaders(creds.v3, 'dev_42', 'post', '/v1/wallet/payments', body, 1763888400.9);
  const names = ['Paycode-Device', 'Paycode-Timestamp', 'Paycode-Nonce', 'Paycode-Signature'];
  assert.deepEqual(Object.keys(headers), names);
  assert.equal(headers['Paycode-Device'], 'dev_42');
  assert.equal(headers['Paycode-Timestamp'], '1763888400');
  assert.match(headers['Paycode-Nonce'], /^[0-9a-f]{32}$/);
  const message = await signingMessage('POST', '/v1/wallet/payments', 1763888400, headers['Paycode-Nonce'], body);
  const publicKey = await importEd25519Public(await publicOf(SEED));
  const signature = b64decode(headers['Paycode-Signature']);
  assert.ok(await globalThis.crypto.subtle.verify({ name: 'Ed25519' }, publicKey, signature, message));
  const again = await signedHeaders(creds.v2, 'dev_42', 'GET', '/v1/wallet/balance', null, 1763888400);
  assert.notEqual(again['Paycode-Nonce'], headers['Paycode-Nonce']);
  const nonce = again['Paycode-Nonce'];
  const signed = await signingMessage('GET', '/v1/wallet/balance', 1763888400, nonce, null);
  const expected = await signRequest(creds.v2, signed);
  assert.equal(again['Paycode-Signature'], expected);
});

test('bad arguments are typed errors', async () => {
  const creds = await credentials();
  await rejectsWith(assert, signingMessage('GET', '/x', 1.5, 'n', null), 'invalid_argument');
  await rejectsWith(assert, signingMessage('GET', 'x', 1, 'n', null), 'invalid_argument');
  await rejectsWith(assert, signingMessage('GET', '/x', 1, 'n', 42), 'invalid_argument');
  await rejectsWith(assert, signRequest({ version: 'v9' }, new Uint8Array(1)), 'invalid_argument');
  await rejectsWith(assert, signRequest({ version: 'v2' }, new Uint8Array(1)), 'invalid_argument');
  await rejectsWith(assert, signRequest(creds.v3, 'text'), 'invalid_argument');
  await rejectsWith(assert, signedHeaders(creds.v3, '', 'GET', '/x', null, 1), 'invalid_argument');
  await rejectsWith(assert, signedHeaders(creds.v3, 'd', 'GET', '/x', null, Number.NaN), 'invalid_argument');
});
