// The app's pure parts: which counter a code uses (docs/spec.md §2) and the two languages.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { CounterExhausted, STEPS_KEPT, claimCounter, validCounterState } from '../src/app/counters.js';
import { TABLES, pickLanguage } from '../src/app/i18n.js';
import { code128Modules, groupDigits, qrMatrix } from '../src/app/render.js';
import { readFileSync } from 'node:fs';
import { prepareZXingModule, readBarcodes } from 'zxing-wasm/reader';

const EMPTY = { counters: {}, floor: -1 };

function claimMany(state, steps, max = 9) {
  const used = [];
  for (const step of steps) {
    const claimed = claimCounter(state, step, max, 30, step * 30 + 1);
    used.push([step, claimed.counter]);
    state = claimed.state;
  }
  return { used, state };
}

test('counters count up per step and start at 0 in a new step', () => {
  const { used } = claimMany(EMPTY, [100, 100, 100, 101, 100]);
  assert.deepEqual(used, [[100, 0], [100, 1], [100, 2], [101, 0], [100, 3]]);
});

test('a step whose counters are used up refuses, saying when the next step starts', () => {
  let { state } = claimMany(EMPTY, [7, 7, 7], 2);
  assert.throws(() => claimCounter(state, 7, 2, 30, 7 * 30 + 10), (error) => error instanceof CounterExhausted && error.reason === 'used' && error.retryAfterS === 20);
  state = claimCounter(state, 8, 2, 30, 8 * 30).state;
  assert.equal(state.counters[8], 1);
});

test('steps older than the remembered ones are refused: a clock set back never repeats a code', () => {
  const steps = Array.from({ length: STEPS_KEPT + 3 }, (_, i) => 1000 + i);
  const { used, state } = claimMany(EMPTY, steps);
  assert.equal(Object.keys(state.counters).length, STEPS_KEPT);
  assert.equal(state.floor, 1002);
  assert.ok(used.every(([, counter]) => counter === 0));
  for (const old of [1000, 1001, 1002]) {
    assert.throws(() => claimCounter(state, old, 9, 30, old * 30), (error) => error.reason === 'behind');
  }
  assert.equal(claimCounter(state, 1003, 9, 30, 1003 * 30).counter, 1);
});

test('a pair (step, counter) is never handed out twice, whatever the order of steps', () => {
  let state = EMPTY;
  const seen = new Set();
  const steps = [5, 6, 5, 4, 9, 5, 3, 12, 4, 6, 6, 13, 2, 11];
  for (const step of steps) {
    try {
      const claimed = claimCounter(state, step, 9, 30, step * 30);
      state = claimed.state;
      const key = `${step}:${claimed.counter}`;
      assert.ok(!seen.has(key), key);
      seen.add(key);
    } catch (error) {
      assert.ok(error instanceof CounterExhausted);
    }
  }
  assert.ok(seen.size >= 10);
});

test('a stored counter state is believed only in its exact shape', () => {
  assert.ok(validCounterState({ counters: { 12: 3 }, floor: -1 }));
  for (const bad of [null, {}, { counters: {} }, { counters: { x: 1 }, floor: 0 }, { counters: { 1: -1 }, floor: 0 }, { counters: { 1: 1.5 }, floor: 0 }]) {
    assert.equal(validCounterState(bad), false, JSON.stringify(bad));
  }
});

test('English and Chinese carry the same messages with the same placeholders', () => {
  const english = TABLES.en;
  const chinese = TABLES['zh-CN'];
  assert.deepEqual(Object.keys(chinese).sort(), Object.keys(english).sort());
  const holes = (text) => (text.match(/\{\w+\}/g) || []).sort().join();
  for (const key of Object.keys(english)) assert.equal(holes(chinese[key]), holes(english[key]), key);
  assert.equal(pickLanguage(['zh-TW', 'en']), 'zh-CN');
  assert.equal(pickLanguage(['fr-FR', 'en-GB']), 'en');
  assert.equal(pickLanguage(['fr-FR']), 'en');
});

test('a drawn QR reads back as the code, and v1 digits are Code 128 set C in groups of four', async () => {
  const text = 'PC2ABCDEFGHIJKLMNOPQRSTUVWXYZ234567ABCDEFGH';
  const matrix = qrMatrix(text);
  const scale = 4;
  const size = matrix.length * scale;
  const data = new Uint8ClampedArray(size * size * 4);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const value = matrix[Math.floor(y / scale)][Math.floor(x / scale)] ? 0 : 255;
      data.set([value, value, value, 255], (y * size + x) * 4);
    }
  }
  const wasm = readFileSync(new URL('../node_modules/zxing-wasm/dist/reader/zxing_reader.wasm', import.meta.url));
  prepareZXingModule({ overrides: { wasmBinary: wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength) } });
  const [read] = await readBarcodes({ data, width: size, height: size, colorSpace: 'SRGB' }, { formats: ['QRCode'] });
  assert.equal(read.text, text);
  const bars = code128Modules('873167583699589887379608');
  assert.ok(bars.startsWith('11010011100'), 'start C');
  assert.ok(bars.endsWith('1100011101011'), 'stop');
  assert.equal(bars.length, 11 * (1 + 12 + 1) + 13);
  assert.equal(groupDigits('873167583699589887379608'), '8731 6758 3699 5898 8737 9608');
  assert.throws(() => code128Modules('123'));
});

test('a payment PIN follows the server\'s rule (shared/paycode/shared/credentials.py)', async () => {
  const { pinProblem } = await import('../src/core/index.js');
  for (const pin of ['123456', '654321', '000000', '890123']) assert.equal(pinProblem(pin), 'run', pin);
  for (const pin of ['121212', '123123', '112233', '520520']) assert.equal(pinProblem(pin), 'common', pin);
  for (const pin of ['12345', '12345a', '1234567', '']) assert.equal(pinProblem(pin), 'format', pin);
  for (const pin of ['246810', '135790', '739152', '135246']) assert.equal(pinProblem(pin), null, pin);
});
