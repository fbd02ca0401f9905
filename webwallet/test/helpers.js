// Shared by the tests: the repository's vector files and a credential builder.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hexToBytes } from '../src/core/bytes.js';
import { importEd25519Seed, importSymmetricDevice } from '../src/core/keys.js';

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = join(here, '..', '..');

export function readVectors(name) {
  return JSON.parse(readFileSync(join(REPO, 'tests', 'vectors', name), 'utf8'));
}

/** The wallet-side credential of a codes.json vector (keys imported non-extractable). */
export async function vectorCredential(vector) {
  const credential = { version: vector.version, handle: hexToBytes(vector.handle) };
  if (vector.version === 'v3') {
    credential.signingKey = await importEd25519Seed(hexToBytes(vector.ed25519_seed));
    credential.sealPublic = hexToBytes(vector.seal_public);
  } else {
    Object.assign(
      credential,
      await importSymmetricDevice(hexToBytes(vector.device_key), hexToBytes(vector.hiding_key)),
    );
  }
  return credential;
}

/** Asserts that `promise` rejects with a PaycodeError of `code`. */
export async function rejectsWith(assert, promise, code) {
  await assert.rejects(promise, (error) => {
    assert.equal(error.code, code, `expected ${code}, got ${error.code}: ${error.message}`);
    return true;
  });
}
