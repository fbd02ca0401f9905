// docs/spec.md §12: tests/vectors/merchant_qr.json (every variant reads with its verdict and
// the vector's fields) and tests/vectors/mpm_payloads.json (real payloads of other schemes
// decode to their published fields; broken ones throw at the published offset), plus the
// hand-made defects of the Python reference's tests.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { b64urlEncode, bytesToHex, hexToBytes, utf8 } from '../src/core/bytes.js';
import { readCollection } from '../src/core/collection.js';
import { EmvCrcError, EmvFormatError, NotPaycodeCollection } from '../src/core/errors.js';
import { importEd25519Seed } from '../src/core/keys.js';
import { PAYLOAD_CHARS_MAX, crc16, decodeMpm } from '../src/core/mpm.js';
import { readSignature, verifySignature } from '../src/core/qrSignature.js';
import { readVectors } from './helpers.js';

const QR = readVectors('merchant_qr.json');
const MPM = readVectors('mpm_payloads.json');
const KEYS = Object.entries(QR.public_keys).map(([keyId, hex]) => ({
  key_id: keyId,
  public_key: b64urlEncode(hexToBytes(hex)),
}));
const FIELD_NAMES = {
  merchant_id: 'merchantId', merchant_name: 'merchantName', merchant_city: 'merchantCity',
  currency: 'currency', country_code: 'countryCode', terminal_id: 'terminalId',
  amount: 'amountText', reference: 'merchantOrderId', mcc: 'mcc', order_token: 'orderToken',
  language: 'language', local_name: 'localName', local_city: 'localCity',
};

/** `body` closed by "6304" and its correct CRC. */
function signed(body) {
  const unsigned = `${body}6304`;
  return unsigned + crc16(utf8(unsigned)).toString(16).toUpperCase().padStart(4, '0');
}

function field(decoded, key) {
  const [tag, sub] = key.split('/');
  const found = decoded.find(tag);
  return (sub ? found?.child(sub) : found)?.value ?? null;
}

function throwsAt(fn, kind, offset) {
  assert.throws(fn, (error) => {
    assert.equal(error.constructor, kind, `${error.name}: ${error.message}`);
    assert.equal(error.code, 'code_malformed');
    assert.equal(error.offset, offset, error.message);
    assert.ok(error.message.includes(`at offset ${offset}`));
    return true;
  });
}

test('the merchant QR vector file is what it says', async () => {
  assert.equal(QR.format, 'paycode-merchant-qr-vectors/1');
  assert.ok(QR.vectors.length >= 3);
  const key = await importEd25519Seed(hexToBytes(QR.ed25519_seed_hex), { extractable: true });
  const jwk = await globalThis.crypto.subtle.exportKey('jwk', key);
  assert.deepEqual(Object.values(QR.public_keys), [bytesToHex(Uint8Array.from(Buffer.from(jwk.x, 'base64url')))]);
});

for (const vector of QR.vectors) {
  test(`merchant QR "${vector.label}": fields, signature and every variant's verdict`, async () => {
    const read = readCollection(vector.payload);
    for (const [name, value] of Object.entries(vector.fields)) {
      assert.equal(read[FIELD_NAMES[name]], value, name);
    }
    for (const [name, camel] of Object.entries(FIELD_NAMES)) {
      const always = ['country_code', 'mcc'].includes(name);
      if (!(name in vector.fields) && !always) assert.equal(read[camel], null, name);
    }
    assert.equal(read.initiation, 'amount' in vector.fields ? 'dynamic' : 'static');
    assert.equal(read.displayName, vector.fields.local_name ?? vector.fields.merchant_name);
    assert.equal(read.signature.keyId, vector.key_id);
    assert.equal(bytesToHex(read.signature.message), vector.signed_message_hex);
    assert.equal(bytesToHex(read.signature.signature), vector.signature_hex);
    const key = await importEd25519Seed(hexToBytes(QR.ed25519_seed_hex));
    const again = await globalThis.crypto.subtle.sign({ name: 'Ed25519' }, key, read.signature.message);
    assert.equal(bytesToHex(new Uint8Array(again)), vector.signature_hex);
    const verdicts = {};
    for (const variant of vector.variants) {
      verdicts[variant.name] = await verifySignature(readCollection(variant.payload).signature, KEYS);
      assert.equal(await verifySignature(variant.payload, KEYS), variant.verdict);
    }
    assert.deepEqual(verdicts, { 'as issued': 'verified', altered: 'altered', unsigned: 'unsigned' });
    assert.equal(await verifySignature(vector.payload, []), 'unknown_key');
    const other = [{ keyId: 'sk_other', publicKey: KEYS[0].public_key }];
    assert.equal(await verifySignature(vector.payload, other), 'unknown_key');
    const wrong = [{ key_id: vector.key_id, public_key: b64urlEncode(new Uint8Array(32).fill(7)) }];
    assert.equal(await verifySignature(vector.payload, wrong), 'altered');
  });
}

const PAYLOAD = QR.vectors[0].payload;
const UNSIGNED = QR.vectors[0].variants.find((v) => v.verdict === 'unsigned').payload;
const SIG_START = PAYLOAD.indexOf('8085');

test('broken signature templates are format errors at their offset', () => {
  const body = PAYLOAD.slice(0, -8);
  const first = body.slice(SIG_START, SIG_START + 89);
  const second = body.slice(SIG_START + 89);
  assert.ok(first.startsWith('8085') && second.startsWith('8162'));
  const before = body.slice(0, SIG_START);
  throwsAt(() => readSignature(signed(before + first)), EmvFormatError, SIG_START);
  throwsAt(() => readSignature(signed(before + second)), EmvFormatError, SIG_START);
  throwsAt(() => readCollection(signed(before + first + second + '6103123')), EmvFormatError, SIG_START);
  const badGuid = second.replace('dev.paycode', 'dev.paycodf');
  throwsAt(() => readSignature(signed(before + first + badGuid)), EmvFormatError, SIG_START + 89);
  const badChar = second.slice(0, -1) + '!';
  throwsAt(() => readSignature(signed(before + first + badChar)), EmvFormatError, SIG_START + 4 + 15 + 23);
  const tailText = second.slice(-43);
  const short = `81600011dev.paycode0141${tailText.slice(0, -2)}`;
  throwsAt(() => readSignature(signed(before + first + short)), EmvFormatError, SIG_START + 4 + 15 + 23);
});

test('a payload with an emoji in template 64 counts characters, not UTF-16 units', async () => {
  const body = UNSIGNED.slice(0, -8)+ '64170002ZH0101😀0202北京';
  const payload = signed(body);
  const read = readCollection(payload);
  assert.equal(read.localName, '😀');
  assert.equal(read.displayCity, '北京');
  assert.equal(read.signature, null);
  assert.equal(await verifySignature(payload, KEYS), 'unsigned');
});

for (const vector of MPM.valid) {
  test(`real payload ${vector.name} decodes to its published fields`, () => {
    const decoded = decodeMpm(vector.payload);
    const expect = vector.expect;
    assert.equal(decoded.scheme, expect.scheme);
    assert.equal(decoded.pointOfInitiation, expect.point_of_initiation);
    assert.equal(decoded.value('59'), expect.merchant_name);
    assert.equal(decoded.value('60'), expect.merchant_city);
    assert.equal(decoded.value('53'), expect.currency);
    assert.equal(decoded.value('54'), expect.amount);
    assert.equal(decoded.value('58'), expect.country_code);
    assert.deepEqual(decoded.deviations.map((d) => `${d.rule}:${d.tag}`), expect.deviations);
    for (const [key, value] of Object.entries(expect.fields ?? {})) assert.equal(field(decoded, key), value, key);
    const text = decoded.objects.map((o) => `${o.tag}${String(o.size).padStart(2, '0')}${o.value}`).join('');
    assert.equal(text, vector.payload);
    assert.throws(() => readCollection(vector.payload), (error) => {
      assert.ok(error instanceof NotPaycodeCollection);
      assert.equal(error.code, 'not_paycode_collection');
      return true;
    });
  });
}

for (const vector of MPM.invalid) {
  test(`published payload ${vector.name} is refused at offset ${vector.offset}`, () => {
    const kinds = { EmvCrcError, EmvFormatError };
    throwsAt(() => decodeMpm(vector.payload), kinds[vector.error], vector.offset);
    throwsAt(() => readCollection(vector.payload), kinds[vector.error], vector.offset);
  });
}

const PAYNOW = MPM.valid.find((v) => v.name === 'paynow_odoo').payload;
const ACCOUNT = '26150011dev.paycode';
const MANDATORY = '52040000' + '5303156' + '5802CN' + '5905Alice' + '6008Shanghai';
const OVERRUN = '26220011dev.paycode0109abc';
const BROKEN = [
  ['crc digit changed', PAYNOW.slice(0, -1) + (PAYNOW.at(-1) !== '0' ? '0' : '1'), EmvCrcError, 140],
  ['crc not hex', `${PAYNOW.slice(0, -4)}12G4`, EmvCrcError, 140],
  ['truncated', PAYNOW.slice(0, 100), EmvFormatError, 86],
  ['truncated header', '00020101', EmvFormatError, 6],
  ['duplicate tag', signed(`000201${ACCOUNT}${MANDATORY}5802CN`), EmvFormatError, 67],
  ['non-numeric length', signed('000201' + '52A40000'), EmvFormatError, 8],
  ['non-numeric id', signed('000201' + '5X040000'), EmvFormatError, 6],
  ['overrunning length', signed('000201' + '599'), EmvFormatError, 8],
  ['missing crc', `000201${ACCOUNT}${MANDATORY}`, EmvFormatError, 67],
  ['data after crc', `${signed(`000201${ACCOUNT}${MANDATORY}`)}6103123`, EmvFormatError, 75],
  ['crc length 05', '000201' + '630512345', EmvFormatError, 8],
  ['empty', '', EmvFormatError, 0],
  ['too long', '0'.repeat(PAYLOAD_CHARS_MAX + 1), EmvFormatError, PAYLOAD_CHARS_MAX],
  ['lone surrogate', '000201\ud800', EmvFormatError, 6],
  ['template overrun', signed(`000201${OVERRUN}${MANDATORY}`), EmvFormatError, 27],
  ['template duplicate', signed(`000201${'26120002ab0002cd'}${MANDATORY}`), EmvFormatError, 16],
];

for (const [name, payload, kind, offset] of BROKEN) {
  test(`broken payload (${name}) throws ${kind.name} at ${offset}`, () => {
    throwsAt(() => decodeMpm(payload), kind, offset);
  });
}

test('non-text is a format error', () => {
  throwsAt(() => decodeMpm(new Uint8Array(6)), EmvFormatError, 0);
  throwsAt(() => readCollection(null), EmvFormatError, 0);
});

const DEVIATIONS = [
  [ACCOUNT + MANDATORY.replace('5905Alice', `5926${'A'.repeat(26)}`), ['field_length:59']],
  [ACCOUNT + MANDATORY.replace('6008Shanghai', `6016${'C'.repeat(16)}`), ['field_length:60']],
  [`${ACCOUNT}${MANDATORY}54051.234`, ['amount_minor_digits:54']],
  [`${ACCOUNT}${MANDATORY}54041,00`, ['field_format:54']],
  [`010213${ACCOUNT}${MANDATORY}`, ['initiation_method_value:01']],
  [ACCOUNT + MANDATORY.replace('5905Alice', '5902李四'), ['character_set:59']],
  [`${ACCOUNT}${MANDATORY}56031.0`, ['convenience_fee:56']],
  [`${ACCOUNT}${MANDATORY}550202`, ['convenience_fee:56']],
  [`26080104abcd${MANDATORY}`, ['template_guid_missing:26']],
  [`${ACCOUNT}${MANDATORY}7002xx`, ['reserved_id:70']],
  [`${ACCOUNT}${MANDATORY}8003xyz`, ['template_unparsed:80']],
  [`${ACCOUNT}${MANDATORY}62300526${'R'.repeat(26)}`, ['field_length:62/05']],
  [`${ACCOUNT}${MANDATORY}64060002ZH`, ['mandatory_missing:64/01']],
  [MANDATORY, ['mandatory_missing:02-51']],
  [ACCOUNT + MANDATORY.replace('52040000', ''), ['mandatory_missing:52']],
];

for (const [body, expected] of DEVIATIONS) {
  test(`spec breach ${expected.join(',')} is a deviation, and no collection code`, () => {
    const payload = signed(`000201${body}`);
    assert.deepEqual(decodeMpm(payload).deviations.map((d) => `${d.rule}:${d.tag}`), expected);
    const refused = (error) => ['code_malformed', 'not_paycode_collection'].includes(error.code);
    assert.throws(() => readCollection(payload), refused);
  });
}

test('format indicator rules and a lowercase CRC are deviations', () => {
  const rules = (payload) => decodeMpm(payload).deviations.map((d) => `${d.rule}:${d.tag}`);
  assert.deepEqual(rules(signed(`${ACCOUNT}000201${MANDATORY}`)), ['format_indicator_first:00']);
  assert.deepEqual(rules(signed(`000202${ACCOUNT}${MANDATORY}`)), ['format_indicator_value:00']);
  assert.deepEqual(rules(PAYNOW.slice(0, -4) + PAYNOW.slice(-4).toLowerCase()), ['crc_lowercase:63']);
});

const DYNAMIC = QR.vectors[1].variants.find((v) => v.verdict === 'unsigned').payload;

test('our template breaking our rules is a format error, not another scheme', () => {
  const resigned = (payload) => signed(payload.slice(0, -8));
  for (const [old, replacement] of [
    ['010212', '010211'],
    ['5802CN', '5803CHN'],
    ['5303156', '5303999'],
    ['0120mch_0000000000000001', '0320mch_0000000000000001'],
    ['54042.50', '54042.5'],
    ['54042.50', '54040.00'],
  ]) {
    assert.ok(DYNAMIC.includes(old), old);
    assert.throws(() => readCollection(resigned(DYNAMIC.replace(old, replacement))), (error) => {
      assert.equal(error.constructor, EmvFormatError, `${old}: ${error.message}`);
      assert.ok(error.offset >= 0 && error.offset < DYNAMIC.length + 2);
      return true;
    });
  }
  const tampered = DYNAMIC.slice(0, -1) + (DYNAMIC.at(-1) !== '0' ? '0' : '1');
  throwsAt(() => readCollection(tampered), EmvCrcError, DYNAMIC.length - 4);
});

test('an amount is read in its canonical form', () => {
  const payload = signed(DYNAMIC.slice(0, -8).replace('54042.50', '540402.5'));
  assert.equal(readCollection(payload).amountText, '2.50');
});

test('a re-spelled signature is malformed, never verified (one spelling per signature)', async () => {
  const vector = QR.vectors[0];
  const issued = vector.payload;
  const start = issued.indexOf('0243') + 4; // 80/02: the signature's first 43 characters
  const text = issued.slice(start, start + 43);
  const respelled = [
    text.slice(0, 10) + '!' + text.slice(11),
    text.replace(/-/g, '+').replace(/_/g, '/'),
  ].filter((other) => other !== text);
  assert.ok(respelled.length >= 1);
  for (const other of respelled) {
    const payload = signed(issued.slice(0, start) + other + issued.slice(start + 43, -8));
    assert.throws(() => readSignature(payload), (error) => error.code === 'code_malformed');
  }
});
