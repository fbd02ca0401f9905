// The current code keys a signed wallet answer carries (docs/spec.md §7, docs/api.md "Current
// code keys"): `code_keys: [{version, key_id, hiding_key | seal_public_key}]`. Only well-formed
// entries are kept, so a damaged one never replaces a working key (shared/paycode/shared/
// code_keys.py is the reference).
import { b64decode } from './bytes.js';
import { checkX25519Public } from './keyCheck.js';

const KEY_BYTES = 32;
const KEY_ID_CHARS_MAX = 32;
const ENTRIES_MAX = 8;
const FIELD_OF_VERSION = { v1: 'hiding_key', v2: 'hiding_key', v3: 'seal_public_key' };
const PRINTABLE = /^[\x20-\x7e]*$/;

/** version -> {keyId, key: Uint8Array}; an absent or damaged list gives {}. */
export function readCodeKeys(raw) {
  const found = {};
  if (!Array.isArray(raw)) return found;
  for (const entry of raw.slice(0, ENTRIES_MAX)) {
    const key = readEntry(entry);
    if (key) found[key.version] = key;
  }
  return found;
}

function readEntry(entry) {
  if (!entry || typeof entry !== 'object') return null;
  const { version, key_id: keyId } = entry;
  if (!Object.hasOwn(FIELD_OF_VERSION, version)) return null;
  if (typeof keyId !== 'string' || !PRINTABLE.test(keyId)) return null;
  let key;
  try {
    key = b64decode(entry[FIELD_OF_VERSION[version]]);
  } catch {
    return null;
  }
  if (key.length !== KEY_BYTES) return null;
  if (version === 'v3' && !strongSealKey(key)) return null;
  return { version, keyId: keyId.slice(0, KEY_ID_CHARS_MAX), key };
}

// A low-order seal key would make every sealed code readable by anyone (keyCheck.js says why).
function strongSealKey(key) {
  try {
    checkX25519Public(key);
    return true;
  } catch {
    return false;
  }
}
