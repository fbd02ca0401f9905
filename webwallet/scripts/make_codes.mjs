// Cross-check driver: the Python tests (tests/webwallet/test_js_core.py) hand the JavaScript
// core one JSON request on stdin and verify what it makes with the Python reference
// (docs/spec.md §11: a second implementation passes when the reference accepts its codes).
//
// Request (every list optional; byte strings are hex):
//   {"codes": [{version, handle, device_key, hiding_key | ed25519_seed, seal_public,
//               step, counter, flags, binding?: {merchant_id, terminal_id}, ephemeral_private?}],
//    "wallet_auth": [{version, device_key | ed25519_seed, method, path, timestamp, nonce,
//                     body, device_id, now}],
//    "mpm": [payload text], "qr_keys": [{key_id, public_key (base64url)}]}
// Response: the same lists, one result per item, in order:
//   codes:       {code, binding_digest?} or {error: code}
//   wallet_auth: {message, signature, headers}  (message hex)
//   mpm:         {decoded: {scheme, deviations} | {error}, collection: {...} | {error}, verdict?}
// Errors are {error: stable code, name, offset?}. Exit status 0 unless the request is unreadable.
import {
  bindingDigest,
  bytesToHex,
  decodeMpm,
  generateCode,
  hexToBytes,
  importEd25519Seed,
  importSymmetricDevice,
  readCollection,
  signRequest,
  signedHeaders,
  signingMessage,
  verifySignature,
} from '../src/core/index.js';

const bytesOf = (hex) => (hex === undefined || hex === null ? null : hexToBytes(hex));

function failure(error) {
  if (typeof error?.code !== 'string') throw error; // not ours: a bug, let it crash loudly
  const out = { error: error.code, name: error.name };
  if (error.offset !== undefined) out.offset = error.offset;
  return out;
}

async function credentialOf(item) {
  const credential = { version: item.version, handle: bytesOf(item.handle) ?? new Uint8Array(0) };
  if (item.version === 'v3') {
    credential.signingKey = await importEd25519Seed(bytesOf(item.ed25519_seed));
    credential.sealPublic = bytesOf(item.seal_public);
  } else {
    const hiding = bytesOf(item.hiding_key) ?? new Uint8Array(32);
    Object.assign(credential, await importSymmetricDevice(bytesOf(item.device_key), hiding));
  }
  return credential;
}

async function makeCode(item) {
  try {
    const credential = await credentialOf(item);
    const out = {};
    let binding = null;
    if (item.binding) {
      binding = await bindingDigest(item.binding.merchant_id, item.binding.terminal_id);
      out.binding_digest = bytesToHex(binding);
    }
    const ephemeralPrivate = bytesOf(item.ephemeral_private);
    out.code = await generateCode(credential, item.step, item.counter, item.flags, {
      binding,
      ephemeralPrivate,
    });
    return out;
  } catch (error) {
    return failure(error);
  }
}

async function signWalletRequest(item) {
  const credential = await credentialOf(item);
  const body = bytesOf(item.body) ?? new Uint8Array(0);
  const message = await signingMessage(item.method, item.path, item.timestamp, item.nonce, body);
  return {
    message: bytesToHex(message),
    signature: await signRequest(credential, message),
    headers: await signedHeaders(
      credential,
      item.device_id,
      item.method,
      item.path,
      body,
      item.now,
    ),
  };
}

function collectionFields(read) {
  const { signature, payload, ...fields } = read;
  return {
    ...fields,
    signature: signature && {
      keyId: signature.keyId,
      signature: bytesToHex(signature.signature),
      message: bytesToHex(signature.message),
    },
  };
}

async function readPayload(payload, keys) {
  const out = {};
  try {
    const decoded = decodeMpm(payload);
    const deviations = decoded.deviations.map((d) => `${d.rule}:${d.tag}`);
    out.decoded = { scheme: decoded.scheme, deviations };
  } catch (error) {
    out.decoded = failure(error);
  }
  try {
    const read = readCollection(payload);
    out.collection = collectionFields(read);
    out.verdict = await verifySignature(read.signature, keys);
  } catch (error) {
    out.collection = failure(error);
  }
  return out;
}

let text = '';
for await (const chunk of process.stdin) text += chunk;
const request = JSON.parse(text);
const response = { codes: [], wallet_auth: [], mpm: [] };
for (const item of request.codes ?? []) response.codes.push(await makeCode(item));
for (const item of request.wallet_auth ?? []) {
  response.wallet_auth.push(await signWalletRequest(item));
}
const keys = request.qr_keys ?? [];
for (const payload of request.mpm ?? []) response.mpm.push(await readPayload(payload, keys));
process.stdout.write(JSON.stringify(response));
