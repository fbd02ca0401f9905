// The web wallet's code generation, timed where it runs: bench/bench_webwallet.py bundles this
// file with esbuild (an IIFE, global `paycodeBench`) for headless Chromium, and
// node_bench.mjs imports it as is in Node. It drives the real protocol core (src/core/) with
// non-extractable WebCrypto keys, as the app does, next to the raw primitives timed in the
// same rounds: only ratios measured side by side mean anything on a shared machine.
//
// A browser's clock steps by 5 µs (cross-origin isolated; 100 µs otherwise) and an HMAC takes
// about that long, so each op runs in batches of k calls, k chosen to last `batchMs`: a batch's
// mean is the per-call figure, and each call is also timed alone for the tail (p90).
//
//   runBench({step, rounds, batches, batchMs, devices: {v1: {...}, v2: {...}, v3: {...}}})
//     devices.v1/v2: {handle, deviceKey, hidingKey} (hex);  devices.v3: {handle, sealPublic}
//   -> {runtime, isolated, codes: {v1, v2, v3}, publicKeys: {v3: hex},
//       ops: {name: {batch, batchMeansMs, roundMediansMs, singles, singleMedianMs, singleP90Ms}}}
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { x25519 } from '@noble/curves/ed25519.js';
import {
  COUNTER_MAX,
  bytesToHex,
  concatBytes,
  generateCode,
  generateSigningKey,
  hexToBytes,
  importSymmetricDevice,
} from '../src/core/index.js';

const subtle = () => globalThis.crypto.subtle;
const random = (n) => globalThis.crypto.getRandomValues(new Uint8Array(n));
const HMAC = { name: 'HMAC', hash: 'SHA-256' };
const ZERO_IV = new Uint8Array(16);

async function credentials(devices) {
  const out = {};
  const publicKeys = {};
  for (const version of ['v1', 'v2']) {
    const d = devices[version];
    const keys = await importSymmetricDevice(hexToBytes(d.deviceKey), hexToBytes(d.hidingKey));
    out[version] = { version, handle: hexToBytes(d.handle), ...keys };
  }
  const { privateKey, publicKeyRaw } = await generateSigningKey();
  out.v3 = {
    version: 'v3',
    handle: hexToBytes(devices.v3.handle),
    signingKey: privateKey,
    sealPublic: hexToBytes(devices.v3.sealPublic),
  };
  publicKeys.v3 = bytesToHex(publicKeyRaw);
  return { credentials: out, publicKeys };
}

/** The references: each primitive (or every primitive a version's generation must call). */
async function references(sealPublic) {
  const hmacKey = await subtle().importKey('raw', random(32), HMAC, false, ['sign']);
  const aesKey = await subtle().importKey('raw', random(32), { name: 'AES-CBC' }, false, [
    'encrypt',
  ]);
  const signer = await subtle().generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
  const message = random(32);
  const block = random(16);
  const plain = random(15);
  const hmac = () => subtle().sign('HMAC', hmacKey, message);
  const aes = () => subtle().encrypt({ name: 'AES-CBC', iv: ZERO_IV }, aesKey, block);
  const ed25519 = () => subtle().sign({ name: 'Ed25519' }, signer.privateKey, message);
  const x25519Pair = () => {
    const eph = random(32);
    return [x25519.getPublicKey(eph), x25519.getSharedSecret(eph, sealPublic)];
  };
  return {
    hmac,
    'hmac+aes': async () => {
      await hmac();
      await aes();
    },
    ed25519_sign: ed25519,
    x25519: async () => x25519Pair(),
    // X25519 (fresh ephemeral) + HKDF + ChaCha20-Poly1305 + Ed25519 sign: v3's floor.
    v3_floor: async () => {
      const [ephPublic, shared] = x25519Pair();
      const ikm = await subtle().importKey('raw', shared, 'HKDF', false, ['deriveBits']);
      const salt = concatBytes(ephPublic, sealPublic);
      const params = { name: 'HKDF', hash: 'SHA-256', salt, info: message };
      const key = new Uint8Array(await subtle().deriveBits(params, ikm, 256));
      const envelope = chacha20poly1305(key, ZERO_IV.subarray(0, 12), message).encrypt(plain);
      await subtle().sign({ name: 'Ed25519' }, signer.privateKey, concatBytes(message, envelope));
    },
  };
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Each op's ms per call, timed over `n` calls after one warm-up call. */
async function estimateMs(op, n) {
  await op();
  const start = performance.now();
  for (let i = 0; i < n; i += 1) await op();
  return (performance.now() - start) / n;
}

export async function runBench(config) {
  const { credentials: creds, publicKeys } = await credentials(config.devices);
  const sealPublic = hexToBytes(config.devices.v3.sealPublic);
  const ops = await references(sealPublic);
  const counters = { v1: 0, v2: 0, v3: 0 };
  for (const version of ['v1', 'v2', 'v3']) {
    ops[version] = () => {
      // Every code a new counter, as the app makes them (it cycles within the version's range).
      counters[version] = (counters[version] + 1) % (COUNTER_MAX[version] + 1);
      return generateCode(creds[version], config.step, counters[version]);
    };
  }
  const codes = {};
  for (const version of ['v1', 'v2', 'v3']) {
    codes[version] = await generateCode(creds[version], config.step, 1);
  }
  const names = Object.keys(ops);
  const batch = {};
  for (const name of names) {
    batch[name] = Math.max(1, Math.round(config.batchMs / (await estimateMs(ops[name], 20))));
  }
  const singles = Object.fromEntries(names.map((name) => [name, []]));
  const batchMeansMs = Object.fromEntries(names.map((name) => [name, []]));
  const roundMediansMs = Object.fromEntries(names.map((name) => [name, []]));
  for (let round = 0; round < config.rounds; round += 1) {
    // A different order every round, so a slow spell of the machine hits every op alike.
    const order = names.map((_, i) => names[(i + round) % names.length]);
    for (const name of order) {
      const op = ops[name];
      const k = batch[name];
      const means = [];
      for (let b = 0; b < config.batches; b += 1) {
        const batchStart = performance.now();
        for (let i = 0; i < k; i += 1) {
          const start = performance.now();
          await op();
          singles[name].push(performance.now() - start);
        }
        means.push((performance.now() - batchStart) / k);
      }
      batchMeansMs[name].push(...means);
      roundMediansMs[name].push(median(means));
    }
  }
  const runtime =
    typeof navigator !== 'undefined' && navigator.userAgent ? navigator.userAgent : 'node';
  const figures = {};
  for (const name of names) {
    const sorted = singles[name].sort((a, b) => a - b);
    figures[name] = {
      batch: batch[name],
      batchMeansMs: batchMeansMs[name],
      roundMediansMs: roundMediansMs[name],
      singles: sorted.length,
      singleMedianMs: median(sorted),
      singleP90Ms: sorted[Math.min(sorted.length - 1, Math.floor(0.9 * sorted.length))],
    };
  }
  return {
    runtime,
    isolated: Boolean(globalThis.crossOriginIsolated),
    ops: figures,
    codes,
    publicKeys,
  };
}
