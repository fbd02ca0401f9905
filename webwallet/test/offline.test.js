// docs/offline.md §8: the JavaScript core reproduces tests/vectors/offline.json byte for byte
// (certificate, payment fields, device message, signature, v4 code text) and gives every
// verdict its expected outcome; the allowance's round-robin and reservations keep each
// certificate within T and n (§3.5); the offline key proof is framed as docs/offline.md §2.1.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ed25519 } from '@noble/curves/ed25519.js';
import { bindingDigest } from '../src/core/binding.js';
import { b64decode, b64encode, b64urlDecode, bytesToHex, concatBytes, hexToBytes, u16, utf8 } from '../src/core/bytes.js';
import { importEd25519Public, importEd25519Seed } from '../src/core/keys.js';
import { makeOfflineKeyProof, offlineKeyProofMessage } from '../src/core/keyProof.js';
import { sha256 } from '../src/core/prf.js';
import {
  CERT_BYTES,
  deviceMessage,
  offlineKeyId,
  packCertificateBody,
  packPayment,
  parseCertificate,
  signCertificate,
  signPayment,
  tillBindings,
  unpackPayment,
  verifyOffline,
} from '../src/core/offline.js';
import { allowanceLeft, chooseCertificate, offlineCode } from '../src/core/offlineAllowance.js';
import { stepOf } from '../src/core/timestep.js';
import { LENGTH, PREFIX, encodeOffline, parseOffline } from '../src/core/v4Offline.js';
import { readVectors, rejectsWith } from './helpers.js';

const DOCUMENT = readVectors('offline.json');
const SERVER_SEED = hexToBytes(DOCUMENT.server.seed);
const SERVER_PUBLIC = hexToBytes(DOCUMENT.server.public_key);
const DEVICE_SEED = hexToBytes(DOCUMENT.device.seed);
const SERVER_KEYS = new Map([[DOCUMENT.server.key_id, SERVER_PUBLIC]]);
const CERT = DOCUMENT.certificate;

function vectorFields(fields) {
  return {
    certId: hexToBytes(fields.cert_id),
    serverKeyId: hexToBytes(fields.server_key_id),
    offlinePk: hexToBytes(fields.offline_pk),
    currency: fields.currency,
    perPaymentCapMinor: fields.per_payment_cap_minor,
    totalCapMinor: fields.total_cap_minor,
    countMax: fields.count_max,
    notBeforeS: fields.not_before_s,
    expiryS: fields.expiry_s,
  };
}

/** Parse and verify as a till: the verdict's name, `code_malformed` when it does not parse. */
async function tillVerdict(text, { unix_time: nowS, till }) {
  let code;
  try {
    code = parseOffline(text);
  } catch (error) {
    return error.code;
  }
  const bindings = await tillBindings(till.merchant_id, till.terminal_id);
  const verdict = await verifyOffline(code, { serverKeys: SERVER_KEYS, nowS, bindings, currency: till.currency });
  return verdict.accepted ? 'accepted' : verdict.reason;
}

test('the vector file is what it says', () => {
  assert.equal(DOCUMENT.format, 'paycode-offline-vectors/1');
  assert.equal(DOCUMENT.step_seconds, 30);
  assert.equal(DOCUMENT.codes.length, 2);
  assert.ok(DOCUMENT.verdicts.length >= 20);
  const expected = new Set(DOCUMENT.verdicts.map((v) => v.expected));
  for (const outcome of ['accepted', 'certificate_expired', 'code_expired', 'certificate_invalid', 'code_invalid', 'merchant_mismatch', 'code_malformed', 'currency_mismatch']) {
    assert.ok(expected.has(outcome), outcome);
  }
});

test('the keys of the vectors: public halves and the self-certifying key id', async () => {
  assert.equal(bytesToHex(ed25519.getPublicKey(SERVER_SEED)), DOCUMENT.server.public_key);
  assert.equal(bytesToHex(ed25519.getPublicKey(DEVICE_SEED)), DOCUMENT.device.public_key);
  assert.equal(bytesToHex(await offlineKeyId(SERVER_PUBLIC)), DOCUMENT.server.key_id);
});

test('the certificate built from its fields is the vector, byte for byte', async () => {
  const fields = vectorFields(CERT.fields);
  const body = packCertificateBody(fields);
  assert.equal(bytesToHex(body), CERT.body);
  assert.equal(bytesToHex(concatBytes(utf8('paycode-offline-cert/1\n'), body)), CERT.signed_message);
  const raw = await signCertificate(fields, SERVER_SEED);
  assert.equal(raw.length, CERT_BYTES);
  assert.equal(bytesToHex(raw.subarray(73)), CERT.cert_sig);
  assert.equal(bytesToHex(raw), CERT.cert);
});

test('a certificate parses to its fields, from bytes and from the base64 the server sends', () => {
  const raw = hexToBytes(CERT.cert);
  for (const input of [raw, b64encode(raw)]) {
    const certificate = parseCertificate(input);
    assert.deepEqual(certificate.fields, vectorFields(CERT.fields));
    assert.equal(bytesToHex(certificate.body), CERT.body);
    assert.equal(bytesToHex(certificate.signature), CERT.cert_sig);
  }
});

test('a certificate that cannot be one is code_malformed', () => {
  const raw = hexToBytes(CERT.cert);
  const bad = (mutate) => {
    const copy = Uint8Array.from(raw);
    mutate(copy);
    return copy;
  };
  const cases = [
    raw.subarray(1),
    concatBytes(raw, new Uint8Array(1)),
    bad((c) => { c[0] = 2; }),
    bad((c) => { c[53] = 0x63; }), // 'c': not a capital letter
    'not base64!',
  ];
  for (const input of cases) {
    assert.throws(() => parseCertificate(input), (error) => error.code === 'code_malformed');
  }
});

test('certificate fields it cannot carry are refused before signing', () => {
  const fields = vectorFields(CERT.fields);
  const cases = [
    { ...fields, currency: 'cny' },
    { ...fields, perPaymentCapMinor: 0 },
    { ...fields, perPaymentCapMinor: fields.totalCapMinor + 1 },
    { ...fields, countMax: 0 },
    { ...fields, countMax: 256 },
    { ...fields, expiryS: fields.notBeforeS },
    { ...fields, certId: new Uint8Array(15) },
  ];
  for (const bad of cases) {
    assert.throws(() => packCertificateBody(bad), (error) => error.code === 'invalid_argument');
  }
  assert.throws(() => packCertificateBody({ ...fields, offlinePk: new Uint8Array(32) }), (error) => error.code === 'weak_key');
});

for (const vector of DOCUMENT.codes) {
  test(`code vector "${vector.name}": every intermediate and the text are the vector's`, async () => {
    assert.equal(stepOf(vector.unix_time), vector.step);
    const payment = {
      counter: vector.counter,
      step: vector.step,
      amountLimitMinor: vector.amount_limit_minor,
      flags: vector.flags,
    };
    const packed = packPayment(payment);
    assert.equal(bytesToHex(packed), vector.payment);
    assert.deepEqual(unpackPayment(packed), payment);
    let binding = null;
    if (vector.binding) {
      binding = await bindingDigest(vector.binding.merchant_id, vector.binding.terminal_id);
      assert.equal(bytesToHex(binding), vector.binding_digest);
    } else {
      assert.equal(vector.binding_digest, '');
    }
    const certificate = parseCertificate(hexToBytes(CERT.cert));
    const message = deviceMessage(certificate.raw, packed, binding ?? new Uint8Array(0));
    assert.equal(bytesToHex(message), vector.device_message);
    const signed = await signPayment(certificate, payment, DEVICE_SEED, binding);
    assert.equal(bytesToHex(signed.deviceSig), vector.device_sig);
    const text = encodeOffline(signed);
    assert.equal(text, vector.code);
    assert.equal(bytesToHex(b64decode(text)), vector.payload);
    assert.equal(text.length, LENGTH);
    assert.equal(LENGTH, 328);
    assert.ok(text.startsWith(PREFIX));
    const parsed = parseOffline(text);
    assert.deepEqual(parsed.payment, payment);
    assert.equal(bytesToHex(parsed.certificate.raw), CERT.cert);
    assert.equal(bytesToHex(parsed.deviceSig), vector.device_sig);
  });
}

for (const verdict of DOCUMENT.verdicts) {
  test(`verdict "${verdict.name}" is ${verdict.expected}`, async () => {
    assert.equal(await tillVerdict(verdict.code, verdict), verdict.expected);
  });
}

test('v4 text of the wrong length, prefix or alphabet is code_malformed', () => {
  const good = DOCUMENT.codes[0].code;
  for (const text of [good.slice(0, -4), `${good}AAAA`, `A${good.slice(1)}`, `${good.slice(0, 100)}*${good.slice(101)}`, 42]) {
    assert.throws(() => parseOffline(text), (error) => error.code === 'code_malformed');
  }
});

test('a code whose signature was made for another binding, or none, is refused', async () => {
  const vector = DOCUMENT.codes[1];
  const code = parseOffline(vector.code);
  const nowS = vector.unix_time;
  const none = await verifyOffline(code, { serverKeys: SERVER_KEYS, nowS, bindings: [] });
  assert.equal(none.reason, 'merchant_mismatch');
  const merchantOnly = await verifyOffline(code, { serverKeys: SERVER_KEYS, nowS, bindings: [await bindingDigest('mer_corner_cafe')] });
  assert.equal(merchantOnly.reason, 'merchant_mismatch');
  const unboundText = DOCUMENT.codes[0].code;
  const flipped = parseOffline(unboundText);
  const lying = { ...flipped, deviceSig: Uint8Array.from(flipped.deviceSig, (b, i) => (i === 0 ? b ^ 1 : b)) };
  assert.equal((await verifyOffline(lying, { serverKeys: SERVER_KEYS, nowS })).reason, 'code_invalid');
});

test('signing refuses a key that is not the certificate\'s and a flag without its binding', async () => {
  const certificate = parseCertificate(hexToBytes(CERT.cert));
  const payment = { counter: 0, step: 1, amountLimitMinor: 100, flags: 0 };
  await rejectsWith(assert, signPayment(certificate, payment, SERVER_SEED), 'invalid_argument');
  await rejectsWith(assert, signPayment(certificate, { ...payment, flags: 2 }, DEVICE_SEED), 'invalid_argument');
  await rejectsWith(assert, signPayment(certificate, payment, DEVICE_SEED, new Uint8Array(32)), 'invalid_argument');
  const key = await importEd25519Seed(DEVICE_SEED);
  const fromKey = await signPayment(certificate, payment, key);
  const fromSeed = await signPayment(certificate, payment, DEVICE_SEED);
  assert.deepEqual(fromKey.deviceSig, fromSeed.deviceSig);
});

// --- the allowance (§3.5) -----------------------------------------------------------------

const NOW_S = DOCUMENT.codes[0].unix_time;
const DEVICE_SEEDS = Array.from({ length: 4 }, (_, i) => Uint8Array.from({ length: 32 }, (_, j) => (i * 32 + j + 7) & 0xff));

async function allowanceOf({ perPaymentCapMinor = 10000, totalCapMinor = 12500, countMax = 16, expiryS = CERT.fields.expiry_s } = {}) {
  const serverKeyId = await offlineKeyId(SERVER_PUBLIC);
  const certificates = [];
  for (const [i, seed] of DEVICE_SEEDS.entries()) {
    const fields = {
      ...vectorFields(CERT.fields),
      certId: Uint8Array.from({ length: 16 }, () => i + 1),
      serverKeyId,
      offlinePk: ed25519.getPublicKey(seed),
      perPaymentCapMinor,
      totalCapMinor,
      countMax,
      expiryS,
    };
    const cert = b64encode(await signCertificate(fields, SERVER_SEED));
    certificates.push({ cert, seed, nextCounter: 0, reservedMinor: 0 });
  }
  return { certificates, lastIndex: -1 };
}

test('codes go round-robin over the certificates, each reserving its limit', async () => {
  let allowance = await allowanceOf();
  const before = structuredClone(allowance);
  const seen = [];
  for (let i = 0; i < 8; i++) {
    const choice = chooseCertificate(allowance, { amountMinor: 1250, nowS: NOW_S });
    seen.push([choice.index, choice.counter, choice.amountLimitMinor]);
    allowance = choice.allowance;
  }
  assert.deepEqual(seen, [[0, 0, 1250], [1, 0, 1250], [2, 0, 1250], [3, 0, 1250], [0, 1, 1250], [1, 1, 1250], [2, 1, 1250], [3, 1, 1250]]);
  assert.deepEqual(allowance.certificates.map((c) => [c.nextCounter, c.reservedMinor]), Array(4).fill([2, 2500]));
  const first = await allowanceOf();
  assert.deepEqual(
    before.certificates.map((c) => [c.nextCounter, c.reservedMinor]),
    first.certificates.map((c) => [c.nextCounter, c.reservedMinor]),
    'the input allowance is not changed',
  );
  assert.deepEqual(allowanceLeft(allowance, NOW_S), { amountMinor: 4 * 10000, codes: 4 * 14 });
});

test('without an amount a code may pay min(p, what its certificate has left)', async () => {
  let allowance = await allowanceOf();
  const limits = [];
  for (let i = 0; i < 8; i++) {
    const choice = chooseCertificate(allowance, { nowS: NOW_S });
    limits.push(choice.amountLimitMinor);
    allowance = choice.allowance;
  }
  assert.deepEqual(limits, [10000, 10000, 10000, 10000, 2500, 2500, 2500, 2500]);
  assert.throws(() => chooseCertificate(allowance, { nowS: NOW_S }), (error) => error.code === 'offline_exhausted');
  assert.deepEqual(allowanceLeft(allowance, NOW_S), { amountMinor: 0, codes: 0 });
});

test('a certificate without room is skipped; none with room is offline_exhausted', async () => {
  let allowance = await allowanceOf();
  allowance = chooseCertificate(allowance, { amountMinor: 10000, nowS: NOW_S }).allowance; // cert 0: 2500 left
  allowance = { ...allowance, lastIndex: 3 };
  const choice = chooseCertificate(allowance, { amountMinor: 5000, nowS: NOW_S });
  assert.equal(choice.index, 1, 'certificate 0 cannot cover 5000 more');
  assert.equal(chooseCertificate(allowance, { amountMinor: 2500, nowS: NOW_S }).index, 0, 'exactly T is allowed');
  for (let i = 0; i < 3; i++) allowance = chooseCertificate(allowance, { amountMinor: 10000, nowS: NOW_S }).allowance;
  assert.throws(() => chooseCertificate(allowance, { amountMinor: 2501, nowS: NOW_S }), (error) => error.code === 'offline_exhausted');
  assert.throws(() => chooseCertificate(allowance, { amountMinor: 10001, nowS: NOW_S }), (error) => error.code === 'offline_limit');
  assert.equal(chooseCertificate(allowance, { amountMinor: 2500, nowS: NOW_S }).amountLimitMinor, 2500);
});

test('no certificate pays more than T in total nor more than n codes', async () => {
  let allowance = await allowanceOf({ totalCapMinor: 12500, countMax: 5 });
  let codes = 0;
  for (let i = 0; i < 100; i++) {
    let choice;
    try {
      choice = chooseCertificate(allowance, { amountMinor: 1 + ((i * 977) % 3000), nowS: NOW_S });
    } catch (error) {
      assert.equal(error.code, 'offline_exhausted');
      continue;
    }
    allowance = choice.allowance;
    codes++;
  }
  assert.equal(codes, 20, 'every certificate spent all of its 5 counters');
  for (const entry of allowance.certificates) {
    assert.ok(entry.reservedMinor <= 12500);
    assert.equal(entry.nextCounter, 5);
  }
  assert.throws(() => chooseCertificate(allowance, { amountMinor: 1, nowS: NOW_S }), (error) => error.code === 'offline_exhausted');
});

test('outside the certificates\' window, or with a bad amount, nothing is chosen', async () => {
  const allowance = await allowanceOf();
  const expired = (error) => error.code === 'certificate_expired';
  assert.throws(() => chooseCertificate(allowance, { nowS: CERT.fields.expiry_s }), expired);
  assert.throws(() => chooseCertificate(allowance, { nowS: CERT.fields.not_before_s - 1 }), expired);
  for (const amountMinor of [0, -5, 12.5, '100']) {
    assert.throws(() => chooseCertificate(allowance, { amountMinor, nowS: NOW_S }), (error) => error.code === 'amount_invalid');
  }
  const broken = { ...allowance, certificates: [{ ...allowance.certificates[0], nextCounter: -1 }] };
  assert.throws(() => chooseCertificate(broken, { nowS: NOW_S }), (error) => error.code === 'invalid_argument');
});

test('a code made from the allowance in JS is accepted by the JS till check', async () => {
  let allowance = await allowanceOf();
  const bindings = await tillBindings('mer_corner_cafe', 't1');
  const choice = chooseCertificate(allowance, { amountMinor: 1250, nowS: NOW_S });
  allowance = choice.allowance;
  const text = await offlineCode(choice, { nowS: NOW_S });
  const code = parseOffline(text);
  assert.deepEqual(code.payment, { counter: 0, step: stepOf(NOW_S), amountLimitMinor: 1250, flags: 0 });
  assert.equal((await verifyOffline(code, { serverKeys: SERVER_KEYS, nowS: NOW_S, bindings, currency: 'CNY' })).accepted, true);

  const bound = chooseCertificate(allowance, { amountMinor: 800, nowS: NOW_S });
  const boundText = await offlineCode(bound, { nowS: NOW_S, binding: await bindingDigest('mer_corner_cafe', 't1') });
  const boundCode = parseOffline(boundText);
  assert.equal(boundCode.payment.flags, 2);
  assert.equal(bound.index, 1);
  assert.equal((await verifyOffline(boundCode, { serverKeys: SERVER_KEYS, nowS: NOW_S, bindings })).accepted, true);
  const elsewhere = await tillBindings('mer_other_shop', 't1');
  assert.equal((await verifyOffline(boundCode, { serverKeys: SERVER_KEYS, nowS: NOW_S, bindings: elsewhere })).reason, 'merchant_mismatch');

  const key = await importEd25519Seed(DEVICE_SEEDS[2]);
  const withKey = { ...bound.allowance, certificates: bound.allowance.certificates.map((c, i) => (i === 2 ? { ...c, seed: key } : c)) };
  const third = chooseCertificate(withKey, { nowS: NOW_S });
  assert.equal(third.index, 2);
  const thirdCode = parseOffline(await offlineCode(third, { nowS: NOW_S }));
  assert.equal(thirdCode.payment.amountLimitMinor, 10000);
  assert.equal((await verifyOffline(thirdCode, { serverKeys: SERVER_KEYS, nowS: NOW_S + 60 })).accepted, true);
  assert.equal((await verifyOffline(thirdCode, { serverKeys: SERVER_KEYS, nowS: NOW_S + 120 })).reason, 'code_expired');
});

// --- the offline key proof (§2.1) ---------------------------------------------------------

test('the offline key proof signs the framed fields and verifies for its own request only', async () => {
  const seed = DEVICE_SEEDS[0];
  const publicKey = ed25519.getPublicKey(seed);
  const message = offlineKeyProofMessage(publicKey, 'dev_example', 'idem-1', 3);
  const field = (data) => concatBytes(u16(data.length), data);
  const expected = concatBytes(
    field(utf8('paycode-offline-key-proof')),
    field(publicKey),
    field(utf8('dev_example')),
    field(utf8('idem-1')),
    field(new Uint8Array([3])),
  );
  assert.deepEqual(message, expected);
  assert.equal(bytesToHex(message.subarray(0, 2)), '0019');
  const proofText = await makeOfflineKeyProof(await importEd25519Seed(seed), publicKey, 'dev_example', 'idem-1', 3);
  const proof = b64urlDecode(proofText);
  assert.equal(proof.length, 64);
  assert.ok(!proofText.includes('=') && !proofText.includes('+') && !proofText.includes('/'));
  assert.deepEqual(proof, ed25519.sign(message, seed), 'RFC 8032: deterministic');
  // The Python reference (shared/paycode/shared/offline_proof.py, make_offline_key_proof) gives
  // these bytes for the same seed, device, key and index.
  assert.equal(bytesToHex(await sha256(message)), 'bc6e9856e881346b5c120d5494a4af43c7b9914cabcd232e160d3b312955b7e9');
  assert.equal(bytesToHex(proof), 'aa1b97575c11ec5fb195d21d88b5e7b68ad15f9a8f2f6cefaa237475d2c2c0220a4d189db49c1a9ccb586946fe55c9d143e2bf1243b4e2cb8ba675fb4cb05c08');
  const verifier = await importEd25519Public(publicKey);
  const verify = (m) => globalThis.crypto.subtle.verify({ name: 'Ed25519' }, verifier, proof, m);
  assert.equal(await verify(message), true);
  assert.equal(await verify(offlineKeyProofMessage(publicKey, 'dev_example', 'idem-1', 2)), false);
  assert.equal(await verify(offlineKeyProofMessage(publicKey, 'dev_other', 'idem-1', 3)), false);
  assert.equal(await verify(offlineKeyProofMessage(publicKey, 'dev_example', 'idem-2', 3)), false);
  assert.throws(() => offlineKeyProofMessage(publicKey.subarray(1), 'dev_example', 'idem-1', 0), /32 bytes/);
  assert.throws(() => offlineKeyProofMessage(publicKey, 'dev_example', 'idem-1', 256), (error) => error.code === 'invalid_argument');
});
