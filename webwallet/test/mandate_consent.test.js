// The points-mandate consent (src/core/mandateConsent.js) against the Python reference's
// vectors (tests/vectors/mandate_consent.json, scripts/gen_mandate_vectors.py): the same bytes
// for every consent, and the same signatures when signed like wallet requests are.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { hexToBytes } from '../src/core/bytes.js';
import { importEd25519Seed, importSymmetricDevice } from '../src/core/keys.js';
import { CONSENT_SCHEME, canonicalJson, consentMessage } from '../src/core/mandateConsent.js';
import { signRequest } from '../src/core/walletAuth.js';
import { readVectors } from './helpers.js';

const VECTORS = readVectors('mandate_consent.json');
const decoder = new TextDecoder('utf-8', { fatal: true });

async function credentials() {
  const v2 = await importSymmetricDevice(hexToBytes(VECTORS.devices.v2.device_key), new Uint8Array(32));
  return {
    v2: { version: 'v2', ...v2 },
    v3: { version: 'v3', signingKey: await importEd25519Seed(hexToBytes(VECTORS.devices.v3.ed25519_seed)) },
  };
}

test('every vector: byte-identical message, ASCII only', () => {
  assert.ok(VECTORS.vectors.length >= 6);
  for (const vector of VECTORS.vectors) {
    const message = consentMessage(vector.consent);
    assert.ok(message.every((byte) => byte < 0x80), vector.name);
    assert.equal(decoder.decode(message), vector.message, vector.name);
  }
});

test('every vector: the v2 and v3 signatures the Python wallet makes', async () => {
  const devices = await credentials();
  for (const vector of VECTORS.vectors) {
    const message = consentMessage(vector.consent);
    for (const [version, credential] of Object.entries(devices)) {
      assert.equal(await signRequest(credential, message), vector.signatures[version], `${vector.name} ${version}`);
    }
  }
});

test('reference and asset default as in the Python Consent; field order does not matter', () => {
  const full = VECTORS.vectors.find((vector) => vector.name === 'no reference');
  const { reference, asset, ...rest } = full.consent;
  assert.deepEqual([reference, asset], ['', 'PTS']);
  assert.equal(decoder.decode(consentMessage(rest)), full.message);
  const reversed = Object.fromEntries(Object.entries(full.consent).reverse());
  assert.equal(decoder.decode(consentMessage(reversed)), full.message);
  assert.ok(full.message.startsWith(`${CONSENT_SCHEME}\n{`));
});

test('a field the consent does not have, a float or a missing field is refused', () => {
  const { consent } = VECTORS.vectors[0];
  const refused = (changes, pattern) => assert.throws(() => consentMessage({ ...consent, ...changes }), (error) => error.code === 'invalid_argument' && pattern.test(error.detail));
  refused({ signature: 'x' }, /unknown consent field signature/);
  refused({ rate_points: 1.5 }, /rate_points must be an integer/);
  refused({ expires_at_s: 2 ** 53 }, /expires_at_s must be an integer/);
  refused({ merchant_id: 7 }, /merchant_id must be a string/);
  const { device_id: _dropped, ...missing } = consent;
  assert.throws(() => consentMessage(missing), /device_id must be a string/);
  assert.throws(() => canonicalJson({ a: null }), /must be a string or a safe integer/);
});
