// docs/spec.md §11: for every vector of tests/vectors/codes.json the JavaScript core makes
// exactly `code` (v3 with the vector's ephemeral key), and derives each bound vector's
// binding_digest from its binding.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bindingDigest } from '../src/core/binding.js';
import { b64decode, bytesToHex, hexToBytes } from '../src/core/bytes.js';
import { CODE_LENGTH, generateCode, versionOf } from '../src/core/codes.js';
import { STEP_SECONDS, stepOf } from '../src/core/timestep.js';
import { readVectors, vectorCredential } from './helpers.js';

const DOCUMENT = readVectors('codes.json');
const VECTORS = DOCUMENT.vectors;

test('the vector file is what it says', () => {
  assert.equal(DOCUMENT.format, 'paycode-vectors/1');
  assert.equal(DOCUMENT.step_seconds, STEP_SECONDS);
  assert.ok(VECTORS.length >= 15);
  for (const version of ['v1', 'v2', 'v3']) {
    assert.ok(VECTORS.some((v) => v.version === version), version);
  }
  assert.ok(VECTORS.some((v) => v.binding && v.binding.terminal_id === null));
  assert.ok(VECTORS.some((v) => v.binding && v.binding.terminal_id !== null));
});

for (const [index, vector] of VECTORS.entries()) {
  const { version, step, counter, flags } = vector;
  const name = `vector ${index}: ${version} step ${step} counter ${counter} flags ${flags}`;
  test(name, async () => {
    assert.equal(stepOf(vector.unix_time), vector.step);
    const credential = await vectorCredential(vector);
    let binding = null;
    if (vector.binding) {
      binding = await bindingDigest(vector.binding.merchant_id, vector.binding.terminal_id);
      assert.equal(bytesToHex(binding), vector.binding_digest);
    } else {
      assert.equal(vector.flags & 2, 0);
    }
    const ephemeralPrivate = vector.ephemeral_private ? hexToBytes(vector.ephemeral_private) : null;
    const code = await generateCode(credential, vector.step, vector.counter, vector.flags, {
      binding,
      ephemeralPrivate,
    });
    assert.equal(code, vector.code);
    assert.equal(code.length, CODE_LENGTH[vector.version]);
    assert.equal(versionOf(code), vector.version);
    if (vector.version === 'v3') assert.equal(b64decode(code).length, 157);
  });
}

test('a v3 code without a given ephemeral differs every time and keeps its layout', async () => {
  const vector = VECTORS.find((v) => v.version === 'v3' && v.flags === 0);
  const credential = await vectorCredential(vector);
  const first = await generateCode(credential, vector.step, vector.counter, 0);
  const second = await generateCode(credential, vector.step, vector.counter, 0);
  assert.notEqual(first, second);
  assert.notEqual(first, vector.code);
  for (const code of [first, second]) {
    assert.equal(code.length, 212);
    assert.ok(code.startsWith('hQVDUFYwMWGBk08J8FBBWUNPREUD'));
  }
});
