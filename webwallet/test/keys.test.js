// docs/spec.md §1, §7: every key the import helpers make is a non-extractable CryptoKey with
// the narrowest usages; the public halves are what the server may see.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  generateSigningKey,
  importEd25519Public,
  importEd25519Seed,
  importHidingKey,
  importSymmetricDevice,
} from '../src/core/keys.js';
import { rejectsWith } from './helpers.js';

const subtle = globalThis.crypto.subtle;
const RAW = new Uint8Array(32).fill(9);

async function assertNotExtractable(key, usages) {
  assert.ok(key instanceof globalThis.CryptoKey);
  assert.equal(key.extractable, false);
  assert.deepEqual([...key.usages].sort(), [...usages].sort());
  for (const format of ['raw', 'pkcs8', 'jwk']) {
    await assert.rejects(subtle.exportKey(format, key), `${key.algorithm.name} exported as ${format}`);
  }
}

test('a symmetric grant becomes three non-extractable keys', async () => {
  const { deviceKey, apiKey, hidingKey } = await importSymmetricDevice(RAW, new Uint8Array(32).fill(3));
  assert.equal(deviceKey.algorithm.name, 'HMAC');
  assert.equal(deviceKey.algorithm.hash.name, 'SHA-256');
  assert.equal(apiKey.algorithm.name, 'HMAC');
  assert.equal(hidingKey.algorithm.name, 'AES-CBC');
  assert.equal(hidingKey.algorithm.length, 256);
  await assertNotExtractable(deviceKey, ['sign']);
  await assertNotExtractable(apiKey, ['sign']);
  await assertNotExtractable(hidingKey, ['encrypt']);
  await assertNotExtractable(await importHidingKey(RAW), ['encrypt']);
});

test('the v3 signing key is non-extractable; only its public half is exported', async () => {
  const { privateKey, publicKeyRaw } = await generateSigningKey();
  await assertNotExtractable(privateKey, ['sign']);
  assert.ok(publicKeyRaw instanceof Uint8Array);
  assert.equal(publicKeyRaw.length, 32);
  const message = new Uint8Array([1, 2, 3]);
  const signature = await subtle.sign({ name: 'Ed25519' }, privateKey, message);
  const publicKey = await importEd25519Public(publicKeyRaw);
  assert.ok(await subtle.verify({ name: 'Ed25519' }, publicKey, signature, message));
  const other = await generateSigningKey();
  assert.notDeepEqual(other.publicKeyRaw, publicKeyRaw);
});

test('a seed imports non-extractable by default, extractable only when asked (tests)', async () => {
  await assertNotExtractable(await importEd25519Seed(RAW), ['sign']);
  const copy = await importEd25519Seed(RAW, { extractable: true });
  assert.equal(copy.extractable, true);
});

test('wrong key sizes are invalid_argument', async () => {
  for (const bad of [new Uint8Array(31), new Uint8Array(33), 'x'.repeat(32), null]) {
    await rejectsWith(assert, importSymmetricDevice(bad, RAW), 'invalid_argument');
    await rejectsWith(assert, importSymmetricDevice(RAW, bad), 'invalid_argument');
    await rejectsWith(assert, importHidingKey(bad), 'invalid_argument');
    await rejectsWith(assert, importEd25519Seed(bad), 'invalid_argument');
    await rejectsWith(assert, importEd25519Public(bad), 'invalid_argument');
  }
});
