// docs/spec.md §6.1: the web wallet refuses the weak keys the Python wallet refuses
// (tests/support/weak_keys.py has the same list: libsodium's small-order blocklist).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { b64urlEncode, hexToBytes } from '../src/core/bytes.js';
import { checkEd25519Public, checkQrKeys, checkX25519Public } from '../src/core/keyCheck.js';

const SMALL_ORDER_Y = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05',
  'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
];
const P = 2n ** 255n - 19n;
const LOW_ORDER_U = [0n, 1n, 0x00b8495f16056286fdb1329ceb8d09da6ac49ff1fae35616aeb8413b7c7aebe0n,
  0x57119fd0dd4e22d8868e1c58c45c44045bef839c55b1d0b1248c50a3bc959c5fn, P - 1n, P, P + 1n];

function littleEndian(n) {
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i += 1) out[i] = Number((n >> BigInt(8 * i)) & 0xffn);
  return out;
}

const isWeak = (error) => error.code === 'weak_key';

test('every small-order Ed25519 encoding, canonical or not, is refused', () => {
  for (const hex of SMALL_ORDER_Y) {
    for (const sign of [0, 0x80]) {
      const raw = hexToBytes(hex);
      raw[31] |= sign;
      assert.throws(() => checkEd25519Public(raw), isWeak, hex);
      assert.throws(() => checkQrKeys([{ key_id: 'qr1', public_key: b64urlEncode(raw) }]), isWeak);
    }
  }
  const good = ed25519.getPublicKey(ed25519.utils.randomSecretKey());
  assert.equal(checkEd25519Public(good), good);
  assert.doesNotThrow(() => checkQrKeys([{ key_id: 'qr1', public_key: b64urlEncode(good) }]));
});

test('every low-order X25519 seal key is refused, a genuine one kept', () => {
  for (const u of LOW_ORDER_U) assert.throws(() => checkX25519Public(littleEndian(u)), isWeak, String(u));
  const good = x25519.getPublicKey(x25519.utils.randomSecretKey());
  assert.equal(checkX25519Public(good), good);
  assert.throws(() => checkX25519Public(good.subarray(1)), isWeak);
});
