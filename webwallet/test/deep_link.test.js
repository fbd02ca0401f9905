// The #pay= entry (docs/webwallet.md): a checkout page's link opens its payload in the wallet
// as a scan would; anything that cannot be a payload opens nothing.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { payloadFromHash } from '../src/app/deep_link.js';
import { readCollection } from '../src/core/collection.js';
import { PAYLOAD_CHARS_MAX } from '../src/core/mpm.js';
import { verifySignature } from '../src/core/qrSignature.js';
import { b64urlEncode, hexToBytes } from '../src/core/bytes.js';
import { readVectors } from './helpers.js';

const QR = readVectors('merchant_qr.json');
const KEYS = Object.entries(QR.public_keys).map(([keyId, hex]) => ({
  key_id: keyId,
  public_key: b64urlEncode(hexToBytes(hex)),
}));

test('a signed payload linked as #pay= reads back exactly, and verifies as the scan would', async () => {
  for (const vector of QR.vectors) {
    const hash = `#pay=${encodeURIComponent(vector.payload)}`;
    const payload = payloadFromHash(hash);
    assert.equal(payload, vector.payload);
    assert.equal(readCollection(payload).merchantId, readCollection(vector.payload).merchantId);
    assert.equal(await verifySignature(payload, KEYS), 'verified');
  }
});

test('no #pay=, an empty or badly encoded one, or one longer than a payload opens nothing', () => {
  for (const hash of ['', '#', '#pay', '#pay=', '#code=abc', '#pay=%E0%A4%A', '#pay=%', 'pay=0002']) {
    assert.equal(payloadFromHash(hash), null, hash);
  }
  assert.equal(payloadFromHash(`#pay=${'A'.repeat(PAYLOAD_CHARS_MAX + 1)}`), null);
  assert.equal(payloadFromHash(`#pay=${'A'.repeat(PAYLOAD_CHARS_MAX)}`), 'A'.repeat(PAYLOAD_CHARS_MAX));
  assert.equal(payloadFromHash(undefined), null);
});
