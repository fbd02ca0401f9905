// A rotated hiding or seal key reaches the web wallet on a signed call (docs/spec.md §7): the
// answer's `code_keys` replaces the stored key and the next code is made with it; a damaged
// entry changes nothing. The wallet runs here over an in-memory store.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Wallet, credentialOf } from '../src/app/wallet.js';
import { b64encode, generateCode, importSymmetricDevice, readCodeKeys } from '../src/core/index.js';

const STEP = 58_000_000;

function bytes(fill) { return new Uint8Array(32).fill(fill); }

class MemoryStore {
  constructor(records) {
    this.records = new Map(records.map((record) => [record.device_id, record]));
    this.metaRecord = { deviceIds: records.map((record) => record.device_id), versions: {} };
  }
  async meta() { return this.metaRecord; }
  async devices() { return [...this.records.values()]; }
  async updateDevice(deviceId, change) {
    const record = this.records.get(deviceId);
    if (!record) return false;
    change(record);
    return true;
  }
}

async function phone() {
  const counterState = { counters: {}, floor: -1 };
  const v1 = {
    device_id: 'dev_1', version: 'v1', handle: new Uint8Array([0, 0, 0, 0, 42]), counterMax: 9,
    keys: await importSymmetricDevice(bytes(1), bytes(2)), counterState,
  };
  const v3 = {
    device_id: 'dev_3', version: 'v3', handle: new Uint8Array(8).fill(7), counterMax: 65535,
    keys: { signingKey: (await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign'])).privateKey },
    sealPublic: bytes(9), counterState,
  };
  const wallet = new Wallet(new MemoryStore([v1, v3]));
  await wallet.reload();
  return wallet;
}

async function v1Code(credential) { return generateCode(credential, STEP, 0, 0); }

test('a rotated hiding key from a signed answer makes the next v1 code', async () => {
  const wallet = await phone();
  const before = await v1Code(credentialOf(wallet.device('v1')));
  const changed = await wallet.learnCodeKeys([
    { version: 'v1', key_id: 'sk_new', hiding_key: b64encode(bytes(3)) },
    { version: 'v3', key_id: 'sk_seal', seal_public_key: b64encode(bytes(4)) },
  ]);
  assert.deepEqual(changed.sort(), ['v1', 'v3']);
  const expected = await v1Code({ version: 'v1', handle: wallet.device('v1').handle, ...(await importSymmetricDevice(bytes(1), bytes(3))) });
  const after = await v1Code(credentialOf(wallet.device('v1')));
  assert.equal(after, expected);
  assert.notEqual(after, before);
  assert.deepEqual(wallet.device('v3').sealPublic, bytes(4));
  assert.deepEqual(await wallet.learnCodeKeys([{ version: 'v1', key_id: 'sk_new', hiding_key: b64encode(bytes(3)) }]), []);
});

test('the Api hands every signed answer to the wallet, and no key to the screens', async () => {
  const wallet = await phone();
  const seen = [];
  wallet.api.onSigned = async (answer) => { seen.push(answer); };
  wallet.api.send = async () => ({ accounts: [], code_keys: [] });
  const answer = await wallet.api.signed({ device_id: 'dev_1', credential: credentialOf(wallet.device('v1')) }, 'GET', '/v1/wallet/balance');
  assert.equal(seen.length, 1);
  assert.deepEqual(answer, { accounts: [] }, 'the key material goes no further than the wallet');
});

test('a damaged code_keys entry never replaces a working key', async () => {
  const wallet = await phone();
  const before = await v1Code(credentialOf(wallet.device('v1')));
  for (const junk of [
    null, 'x', [{ version: 'v1', key_id: 'sk_1', hiding_key: 'short' }],
    [{ version: 'v9', key_id: 'sk_1', hiding_key: b64encode(bytes(3)) }],
    [{ version: 'v3', key_id: 'sk_1', hiding_key: b64encode(bytes(3)) }],
    [{ version: 'v1', key_id: '\u001b[2J', hiding_key: b64encode(bytes(3)) }],
    [{ version: 'v1', key_id: 'sk_1', hiding_key: b64encode(new Uint8Array(31)) }],
  ]) {
    assert.deepEqual(readCodeKeys(junk), {}, JSON.stringify(junk));
    assert.deepEqual(await wallet.learnCodeKeys(junk), []);
  }
  assert.equal(await v1Code(credentialOf(wallet.device('v1'))), before);
});

test('a rotated seal key of low order is ignored, not learned', () => {
  const lowOrder = new Uint8Array(32); // u = 0: every shared secret would be zero
  const genuine = new Uint8Array(32).fill(9);
  assert.deepEqual(readCodeKeys([{ version: 'v3', key_id: 'weak', seal_public_key: b64encode(lowOrder) }]), {});
  const read = readCodeKeys([{ version: 'v3', key_id: 'good', seal_public_key: b64encode(genuine) }]);
  assert.deepEqual(read.v3.key, genuine);
});
