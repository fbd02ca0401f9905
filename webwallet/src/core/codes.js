// Making payment codes (docs/spec.md §2-§6, §10): one entry point over the three versions,
// with the argument checks of the Python codecs. Offline: no network, no storage; the caller
// persists the counter before showing the code (§2, §9).
//   credential = {version: 'v1'|'v2'|'v3', handle: Uint8Array,
//                 deviceKey, hidingKey   (v1/v2: CryptoKeys from keys.importSymmetricDevice),
//                 signingKey, sealPublic (v3: Ed25519 private CryptoKey, server's 32-byte X25519)}
import { BINDING_BYTES } from './binding.js';
import { bytesToBigInt } from './bytes.js';
import { PaycodeError, invalidArgument } from './errors.js';
import * as plaintext from './plaintext.js';
import * as v1 from './v1Numeric.js';
import * as v2 from './v2Qr.js';
import * as v3 from './v3Ed25519.js';

export const VERSIONS = Object.freeze(['v1', 'v2', 'v3']);
export const COUNTER_MAX = Object.freeze({
  v1: v1.COUNTER_MAX,
  v2: plaintext.COUNTER_MAX,
  v3: plaintext.COUNTER_MAX,
});
export const HANDLE_BYTES = Object.freeze({
  v1: v1.HANDLE_BYTES,
  v2: plaintext.HANDLE_BYTES,
  v3: plaintext.HANDLE_BYTES,
});
export const CODE_LENGTH = Object.freeze({ v1: v1.LENGTH, v2: v2.LENGTH, v3: v3.LENGTH });
export const PREFIXES = Object.freeze({ v1: v1.PREFIX, v2: v2.PREFIX, v3: v3.PREFIX });
export const BINDABLE = Object.freeze({ v1: false, v2: true, v3: true });
export const FLAG_USER_VERIFIED = 1;
export const FLAG_MERCHANT_BOUND = 2;
export const KNOWN_FLAGS = FLAG_USER_VERIFIED | FLAG_MERCHANT_BOUND;
export const STEP_LIMIT = 2 ** 32;
/** No live version is longer; the registry refuses longer text before any work. */
export const TEXT_CHARS_MAX = 512;
const CODECS = { v1, v2, v3 };

function isKey(key, type) {
  return typeof key === 'object' && key !== null && key.type === type && 'algorithm' in key;
}

function checkCredential(credential) {
  if (typeof credential !== 'object' || credential === null) {
    throw invalidArgument('a credential is an object');
  }
  const { version, handle } = credential;
  if (!VERSIONS.includes(version)) {
    throw new PaycodeError('version_unknown', `unknown code version; live: ${VERSIONS.join(', ')}`);
  }
  if (!(handle instanceof Uint8Array) || handle.length !== HANDLE_BYTES[version]) {
    throw invalidArgument(`a ${version} handle is ${HANDLE_BYTES[version]} bytes`);
  }
  if (version === 'v1' && bytesToBigInt(handle) >= v1.HANDLE_MODULUS) {
    throw invalidArgument('a v1 handle is below 10^10');
  }
  if (version === 'v3') {
    if (!isKey(credential.signingKey, 'private')) {
      throw invalidArgument('a v3 credential needs signingKey (an Ed25519 private CryptoKey)');
    }
    const seal = credential.sealPublic;
    if (!(seal instanceof Uint8Array) || seal.length !== v3.KEY_BYTES) {
      throw invalidArgument('a v3 credential needs sealPublic (32 bytes)');
    }
  } else if (!isKey(credential.deviceKey, 'secret') || !isKey(credential.hidingKey, 'secret')) {
    throw invalidArgument(`a ${version} credential needs deviceKey and hidingKey (CryptoKeys)`);
  }
  return version;
}

function checkNumbers(version, step, counter, flags) {
  if (!Number.isSafeInteger(step) || step < 0 || step >= STEP_LIMIT) {
    throw invalidArgument('step must be an integer in 0..2^32-1');
  }
  if (!Number.isSafeInteger(counter) || counter < 0) {
    throw invalidArgument('counter must be a non-negative integer');
  }
  if (counter > COUNTER_MAX[version]) {
    throw new PaycodeError(
      'counter_exhausted',
      `a ${version} counter is at most ${COUNTER_MAX[version]} per time step`,
    );
  }
  if (!Number.isSafeInteger(flags) || flags < 0 || flags > 0xff) {
    throw invalidArgument('flags must be an integer in 0..255');
  }
}

function checkBinding(version, flags, binding) {
  const bound = binding !== null && binding !== undefined;
  if (!BINDABLE[version]) {
    if (flags !== 0 || bound) {
      throw new PaycodeError(
        'binding_unsupported',
        'v1 codes carry no flags, so they cannot be merchant-bound: use v2 or v3',
      );
    }
    return new Uint8Array(0);
  }
  if (flags & ~KNOWN_FLAGS) throw invalidArgument('unknown flag bits');
  if (Boolean(flags & FLAG_MERCHANT_BOUND) !== bound) {
    throw invalidArgument('the MERCHANT_BOUND flag and a binding go together');
  }
  if (!bound) return new Uint8Array(0);
  if (!(binding instanceof Uint8Array) || binding.length !== BINDING_BYTES) {
    throw invalidArgument(`a binding is a ${BINDING_BYTES}-byte digest (binding.bindingDigest)`);
  }
  return binding;
}

/**
 * A payment code for (step, counter, flags). `binding`: the 32-byte digest of
 * binding.bindingDigest, given exactly when flags has FLAG_MERCHANT_BOUND. `ephemeralPrivate`
 * (v3 only, 32 bytes) replaces the fresh random ephemeral: for test vectors only.
 */
export async function generateCode(
  credential,
  step,
  counter,
  flags = 0,
  { binding = null, ephemeralPrivate = null } = {},
) {
  const version = checkCredential(credential);
  checkNumbers(version, step, counter, flags);
  const suffix = checkBinding(version, flags, binding);
  if (version === 'v1') return v1.generate(credential, step, counter);
  if (version === 'v2') return v2.generate(credential, step, counter, flags, suffix);
  if (ephemeralPrivate !== null && ephemeralPrivate !== undefined) {
    if (!(ephemeralPrivate instanceof Uint8Array) || ephemeralPrivate.length !== v3.KEY_BYTES) {
      throw invalidArgument('ephemeralPrivate must be 32 bytes');
    }
  }
  return v3.generate(credential, step, counter, flags, suffix, ephemeralPrivate ?? null);
}

/** The version a scanned string routes to by its prefix ('v1'|'v2'|'v3'), or null. */
export function versionOf(codeText) {
  if (typeof codeText !== 'string' || codeText.length > TEXT_CHARS_MAX) return null;
  for (const version of VERSIONS) {
    if (CODECS[version].matches(codeText)) return version;
  }
  return null;
}
