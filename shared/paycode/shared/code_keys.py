"""The current code keys a wallet is handed on its signed online calls (docs/spec.md §7):
`"code_keys": [{"version", "key_id", "hiding_key" | "seal_public_key"}, ...]`, base64.

The server builds the list with `build_code_keys`; the wallet reads it with `read_code_keys`,
which keeps only well-formed entries, so a damaged one never replaces a working key.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field

from paycode.shared.enrollment import ED25519_BYTES, SYMMETRIC_KEY_BYTES, b64
from paycode.shared.errors import WeakKey
from paycode.shared.keycheck import check_x25519_public

KEY_ID_CHARS_MAX = 32
ENTRIES_MAX = 8
"""More entries than versions is not a server speaking this protocol."""
FIELD_OF_VERSION = {"v1": "hiding_key", "v2": "hiding_key", "v3": "seal_public_key"}
SIZE_OF_FIELD = {"hiding_key": SYMMETRIC_KEY_BYTES, "seal_public_key": ED25519_BYTES}


@dataclass(frozen=True, slots=True)
class CodeKey:
    version: str
    key_id: str
    key: bytes = field(repr=False)
    """v1/v2: the hiding key K_hide; v3: the seal public key S_pub."""


def build_code_keys(
    current: Mapping[str, bytes], current_ids: Mapping[str, str], versions: set[str]
) -> list[dict[str, str]]:
    """Server side: the keys handed out for `versions` (keyring.Keyring's current material)."""
    entries = []
    for version in sorted(versions & set(FIELD_OF_VERSION)):
        key = current.get("seal_public" if version == "v3" else version)
        if key is None or version not in current_ids:
            continue
        name = FIELD_OF_VERSION[version]
        entries.append({"version": version, "key_id": current_ids[version], name: b64(key)})
    return entries


def read_code_keys(raw: object) -> dict[str, CodeKey]:
    """Wallet side: version -> key, from a reply's `code_keys` (absent or damaged: empty)."""
    if not isinstance(raw, list):
        return {}
    found: dict[str, CodeKey] = {}
    for entry in raw[:ENTRIES_MAX]:
        key = _entry(entry)
        if key is not None:
            found[key.version] = key
    return found


def _entry(entry: object) -> CodeKey | None:
    if not isinstance(entry, dict):
        return None
    version, key_id = entry.get("version"), entry.get("key_id")
    if not isinstance(version, str) or version not in FIELD_OF_VERSION:
        return None
    if not isinstance(key_id, str) or not key_id.isprintable():
        return None
    name = FIELD_OF_VERSION[version]
    key = _key(entry.get(name), SIZE_OF_FIELD[name])
    if key is None or (version == "v3" and not _strong_seal_key(key)):
        return None
    return CodeKey(version, key_id[:KEY_ID_CHARS_MAX], key)


def _strong_seal_key(key: bytes) -> bool:
    # A low-order seal key would make every sealed code readable by anyone (keycheck.py says why).
    try:
        check_x25519_public(key)
    except WeakKey:
        return False
    return True


def _key(text: object, size: int) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == size else None
