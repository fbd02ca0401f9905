// docs/spec.md §6.1: the v3 key's proof of possession, byte for byte the Python reference's
// (tests/protocol/test_key_proof.py pins the same values: seed 01..20, Ed25519 is deterministic).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { b64decode, bytesToHex, hexToBytes } from '../src/core/bytes.js';
import { importEd25519Public, importEd25519Seed } from '../src/core/keys.js';
import { deviceScope, keyProofMessage, makeKeyProof, sessionScope } from '../src/core/keyProof.js';
import { sha256 } from '../src/core/prf.js';

const SEED = Uint8Array.from({ length: 32 }, (_, i) => i + 1);
const PUBLIC = hexToBytes('79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664');
const SESSION = {
  boundTo: 'session:aaea86ddb8f82780b00d0659ad6b4f56e83e82aed8b5f5a1d84187b1a02a1c66',
  messageSha256: '7295cae93fc5bc300aead34b9d2add5bf7575e5c80fe94f346afe4568b1d925b',
  proof: 'da0ik3PQAZgid8R/69EVoUEl80DxeqnockqpYM6O2L8x5eVHQvIT15z8gvSxYJqRkn3DkVcjAg2A4AlhERIdBg==',
};
const ROTATION = {
  messageSha256: 'e0c006c606de8d647b3b58772ae3c44027842d1be988f14cef868867125e1083',
  proof: 'Jeic1WZKuDynrPhPUIS4Sl/BnF4L1sXo6b43rMC8xZ+QP1O/LBsLYJq/68mJF6FKDiT+sI1K0MqM4NmpTt8lDg==',
};

test('an enrollment proof is bound to the session token hash and equals the reference', async () => {
  const scope = await sessionScope('tok-example', 'idem-1');
  assert.equal(scope.boundTo, SESSION.boundTo);
  const message = keyProofMessage('v3', PUBLIC, scope);
  assert.equal(bytesToHex(await sha256(message)), SESSION.messageSha256);
  const key = await importEd25519Seed(SEED);
  assert.equal(await makeKeyProof(key, 'v3', PUBLIC, scope), SESSION.proof);
});

test('a rotation proof is bound to the signing device and equals the reference', async () => {
  const scope = deviceScope('dev_example', 'idem-2');
  assert.equal(bytesToHex(await sha256(keyProofMessage('v3', PUBLIC, scope))), ROTATION.messageSha256);
  assert.equal(await makeKeyProof(await importEd25519Seed(SEED), 'v3', PUBLIC, scope), ROTATION.proof);
});

test('a proof verifies only for its own request', async () => {
  const scope = await sessionScope('tok-example', 'idem-1');
  const proof = b64decode(await makeKeyProof(await importEd25519Seed(SEED), 'v3', PUBLIC, scope));
  const verifier = await importEd25519Public(PUBLIC);
  const verify = (message) => globalThis.crypto.subtle.verify({ name: 'Ed25519' }, verifier, proof, message);
  assert.equal(await verify(keyProofMessage('v3', PUBLIC, scope)), true);
  const otherKey = { ...scope, idempotencyKey: 'idem-other' };
  assert.equal(await verify(keyProofMessage('v3', PUBLIC, otherKey)), false);
  assert.equal(await verify(keyProofMessage('v3', PUBLIC, await sessionScope('tok-other', 'idem-1'))), false);
  assert.throws(() => keyProofMessage('v3', PUBLIC.subarray(1), scope), /32 bytes/);
});
