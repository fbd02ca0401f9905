// docs/spec.md §2-§6, §10: the argument checks of code generation (typed errors with the
// Python reference's stable codes), routing by prefix, and the byte helpers' strictness.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { base32Decode, base32Encode } from '../src/core/base32.js';
import { bindingDigest } from '../src/core/binding.js';
import * as bytes from '../src/core/bytes.js';
import {
  COUNTER_MAX,
  FLAG_MERCHANT_BOUND,
  FLAG_USER_VERIFIED,
  generateCode,
  versionOf,
} from '../src/core/codes.js';
import { dammDigit, dammValid } from '../src/core/damm.js';
import * as core from '../src/core/index.js';
import { formatAmount, parseAmount } from '../src/core/money.js';
import { STEP_SECONDS, secondsLeftInStep, stepOf } from '../src/core/timestep.js';
import { readVectors, rejectsWith, vectorCredential } from './helpers.js';

const VECTORS = readVectors('codes.json').vectors;
const first = (version) => VECTORS.find((v) => v.version === version && v.flags === 0);
const STEP = 58796280;

test('constants are the spec\'s', () => {
  assert.deepEqual(COUNTER_MAX, { v1: 9, v2: 65535, v3: 65535 });
  assert.equal(FLAG_USER_VERIFIED, 1);
  assert.equal(FLAG_MERCHANT_BOUND, 2);
  assert.equal(STEP_SECONDS, 30);
  assert.equal(stepOf(1763888400), 58796280);
  assert.equal(stepOf(1763888429.99), 58796280);
  assert.equal(secondsLeftInStep(1763888410), 20);
  assert.throws(() => stepOf(-1), { code: 'invalid_argument' });
  assert.throws(() => stepOf(Number.NaN), { code: 'invalid_argument' });
});

test('the index re-exports the API the app calls', () => {
  for (const name of [
    'hexToBytes', 'bytesToHex', 'b64encode', 'b64decode', 'b64urlEncode', 'b64urlDecode',
    'concatBytes', 'u16', 'u32', 'u64', 'utf8', 'importSymmetricDevice', 'importHidingKey',
    'generateSigningKey', 'importEd25519Seed', 'importEd25519Public', 'STEP_SECONDS', 'stepOf',
    'bindingDigest', 'COUNTER_MAX', 'FLAG_USER_VERIFIED', 'FLAG_MERCHANT_BOUND', 'generateCode',
    'versionOf', 'signingMessage', 'signRequest', 'signedHeaders', 'decodeMpm', 'readCollection',
    'readSignature', 'verifySignature', 'PaycodeError', 'EmvFormatError',
  ]) {
    assert.ok(core[name] !== undefined, name);
  }
});

test('v1 refuses flags and bindings: binding_unsupported', async () => {
  const credential = await vectorCredential(first('v1'));
  const digest = await bindingDigest('mer_corner_cafe');
  const bound = generateCode(credential, STEP, 0, FLAG_MERCHANT_BOUND, { binding: digest });
  await rejectsWith(assert, bound, 'binding_unsupported');
  await rejectsWith(assert, generateCode(credential, STEP, 0, 0, { binding: digest }), 'binding_unsupported');
  await rejectsWith(assert, generateCode(credential, STEP, 0, FLAG_USER_VERIFIED), 'binding_unsupported');
});

test('a counter beyond the version\'s maximum is counter_exhausted', async () => {
  for (const version of ['v1', 'v2', 'v3']) {
    const credential = await vectorCredential(first(version));
    await rejectsWith(assert, generateCode(credential, STEP, COUNTER_MAX[version] + 1, 0), 'counter_exhausted');
    assert.ok(await generateCode(credential, STEP, COUNTER_MAX[version], 0));
    for (const bad of [-1, 1.5, '1', null, Number.NaN]) {
      await rejectsWith(assert, generateCode(credential, STEP, bad, 0), 'invalid_argument');
    }
  }
});

test('steps, flags, bindings, handles and keys are checked', async () => {
  const v2 = await vectorCredential(first('v2'));
  const v3 = await vectorCredential(first('v3'));
  const digest = await bindingDigest('mer_corner_cafe', 't1');
  for (const credential of [v2, v3]) {
    for (const step of [-1, 2 ** 32, 1.5, '5']) {
      await rejectsWith(assert, generateCode(credential, step, 0, 0), 'invalid_argument');
    }
    assert.ok(await generateCode(credential, 2 ** 32 - 1, 0, 0));
    await rejectsWith(assert, generateCode(credential, STEP, 0, 4), 'invalid_argument');
    await rejectsWith(assert, generateCode(credential, STEP, 0, 256), 'invalid_argument');
    await rejectsWith(assert, generateCode(credential, STEP, 0, FLAG_MERCHANT_BOUND), 'invalid_argument');
    await rejectsWith(assert, generateCode(credential, STEP, 0, 0, { binding: digest }), 'invalid_argument');
    const short = { binding: digest.slice(1) };
    await rejectsWith(assert, generateCode(credential, STEP, 0, FLAG_MERCHANT_BOUND, short), 'invalid_argument');
    const short7 = { ...credential, handle: new Uint8Array(7) };
    await rejectsWith(assert, generateCode(short7, STEP, 0, 0), 'invalid_argument');
  }
  await rejectsWith(assert, generateCode({ ...v3, signingKey: undefined }, STEP, 0, 0), 'invalid_argument');
  const seal31 = { ...v3, sealPublic: new Uint8Array(31) };
  await rejectsWith(assert, generateCode(seal31, STEP, 0, 0), 'invalid_argument');
  const eph16 = { ephemeralPrivate: new Uint8Array(16) };
  await rejectsWith(assert, generateCode(v3, STEP, 0, 0, eph16), 'invalid_argument');
  await rejectsWith(assert, generateCode({ ...v2, hidingKey: null }, STEP, 0, 0), 'invalid_argument');
  await rejectsWith(assert, generateCode({ ...v2, version: 'v9' }, STEP, 0, 0), 'version_unknown');
  await rejectsWith(assert, generateCode(null, STEP, 0, 0), 'invalid_argument');
  const v1 = await vectorCredential(first('v1'));
  const tooBig = bytes.hexToBytes('02540be400'); // 10^10
  await rejectsWith(assert, generateCode({ ...v1, handle: tooBig }, STEP, 0, 0), 'invalid_argument');
  assert.match(await generateCode({ ...v1, handle: bytes.hexToBytes('02540be3ff') }, STEP, 9, 0), /^87[0-9]{22}$/);
});

test('bindings: ids of 1..99 characters without NUL; terminal null or empty is the merchant', async () => {
  const merchant = await bindingDigest('mer_corner_cafe');
  assert.deepEqual(await bindingDigest('mer_corner_cafe', ''), merchant);
  assert.deepEqual(await bindingDigest('mer_corner_cafe', null), merchant);
  assert.notDeepEqual(await bindingDigest('mer_corner_cafe', 't1'), merchant);
  assert.equal((await bindingDigest('a'.repeat(99), '北'.repeat(99))).length, 32);
  assert.equal((await bindingDigest('😀'.repeat(99))).length, 32); // characters, not UTF-16 units
  const bad = [
    ['', null], ['a'.repeat(100), null], ['a\0b', null], ['m', 'a'.repeat(100)], ['m', 't\0'],
    [null, null], ['\ud800', null],
  ];
  for (const [m, t] of bad) {
    await rejectsWith(assert, bindingDigest(m, t), 'invalid_argument');
  }
});

test('versionOf routes by prefix only', () => {
  for (const vector of VECTORS) assert.equal(versionOf(vector.code), vector.version);
  assert.equal(versionOf('87123'), 'v1');
  assert.equal(versionOf('87abc'), null);
  assert.equal(versionOf('PC2'), 'v2');
  assert.equal(versionOf('hQVDUFYwMWGBk08J8FBBWUNPREUDxx'), 'v3');
  assert.equal(versionOf('hello'), null);
  assert.equal(versionOf(`PC2${'A'.repeat(510)}`), null);
  assert.equal(versionOf(42), null);
});

test('Damm check digits and base32 round trips', () => {
  assert.equal(dammDigit('572'), '4');
  assert.ok(dammValid('5724'));
  assert.ok(!dammValid('5742'));
  for (const vector of VECTORS.filter((v) => v.version === 'v1')) assert.ok(dammValid(vector.code));
  assert.throws(() => dammDigit('12a'), { code: 'invalid_argument' });
  assert.equal(base32Encode(bytes.utf8('foobar')), 'MZXW6YTBOI');
  assert.deepEqual(base32Decode('MZXW6YTBOI'), bytes.utf8('foobar'));
  assert.throws(() => base32Decode('MZXW6YTBOJ'), { code: 'invalid_argument' });
  assert.throws(() => base32Decode('mzxw6ytboi'), { code: 'invalid_argument' });
});

test('byte helpers are strict', () => {
  const data = bytes.utf8('any carnal pleas');
  for (const n of [0, 1, 2, 3, 15, 16]) {
    const part = data.slice(0, n);
    assert.deepEqual(bytes.b64decode(bytes.b64encode(part)), part);
    assert.deepEqual(bytes.b64urlDecode(bytes.b64urlEncode(part)), part);
    assert.equal(bytes.b64encode(part), Buffer.from(part).toString('base64'));
    assert.equal(bytes.b64urlEncode(part), Buffer.from(part).toString('base64url'));
  }
  for (const bad of ['QQ', 'QQ=', 'QR==', 'Q===', 'QQ==QQ==', 'Q Q=', '-_==', 'QUJD\n', 42]) {
    assert.throws(() => bytes.b64decode(bad), { code: 'invalid_argument' }, String(bad));
  }
  for (const bad of ['QQ==', 'QR', 'Q', '+/', 'ab.c']) {
    assert.throws(() => bytes.b64urlDecode(bad), { code: 'invalid_argument' }, bad);
  }
  assert.deepEqual(bytes.hexToBytes('00ffA0'), new Uint8Array([0, 255, 160]));
  for (const bad of ['0', 'zz', '0x00', null]) {
    assert.throws(() => bytes.hexToBytes(bad), { code: 'invalid_argument' });
  }
  assert.equal(bytes.bytesToHex(bytes.u16(258)), '0102');
  assert.equal(bytes.bytesToHex(bytes.u32(2 ** 32 - 1)), 'ffffffff');
  assert.equal(bytes.bytesToHex(bytes.u64(2n ** 64n - 1n)), 'ffffffffffffffff');
  assert.equal(bytes.bytesToHex(bytes.u64(9999999999)), '00000002540be3ff');
  for (const [fn, bad] of [[bytes.u16, 65536], [bytes.u32, -1], [bytes.u32, 1.5], [bytes.u64, 2n ** 64n]]) {
    assert.throws(() => fn(bad), { code: 'invalid_argument' });
  }
  const joined = bytes.concatBytes(new Uint8Array([1]), new Uint8Array(0), new Uint8Array([2, 3]));
  assert.deepEqual(joined, new Uint8Array([1, 2, 3]));
  assert.throws(() => bytes.concatBytes([1]), { code: 'invalid_argument' });
});

test('amounts parse strictly and format canonically', () => {
  assert.equal(formatAmount(parseAmount('12.5', 'CNY')), '12.50');
  assert.equal(formatAmount(parseAmount('007', 'JPY')), '7');
  assert.equal(formatAmount(parseAmount('0.001', '414')), '0.001');
  assert.equal(formatAmount(parseAmount('1000000000000.00', 'USD')), '1000000000000.00');
  const bad = [
    ['0', 'CNY'], ['1.234', 'CNY'], ['1.5', 'JPY'], ['-1', 'CNY'], ['1e3', 'CNY'], ['1.', 'CNY'],
    ['.5', 'CNY'], ['1,00', 'CNY'], ['1', 'XXX'], ['1', 'cny'], ['10000000000000.01', 'CNY'],
  ];
  for (const [text, currency] of bad) {
    assert.throws(() => parseAmount(text, currency), { code: 'amount_invalid' }, `${text} ${currency}`);
  }
});
