"""The signed return of a hosted checkout (docs/spec.md, section 15).

When a checkout is paid, the customer's browser goes back to the merchant's `return_url` with
the result in `paycode_*` query parameters. The browser carries them, so the customer (or
anyone who edits the address bar) could change them: the server signs them with its QR key
(the Ed25519 key that signs its merchant QR payloads, section 12) and a merchant verifies them
with the published public keys alone, no secret of its own and no call back to the server.

The signature covers DOMAIN followed by one `name=value` line per field, in the fixed order of
FIELDS, without a final newline. A value is printable ASCII or any printable Unicode without
control characters, so no value can contain a line break and shift the lines. The parameters a
merchant receives are read exactly: each field once, no other `paycode_` parameter, the
signature in the one base64url spelling `b64url` writes. The merchant's own parameters (any
name not starting with `paycode_`) are left alone.

Pure: the keys come in as bytes, the signer as a function; URL parsing and joining are the
caller's (this package does no I/O and imports no URL library).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from paycode.shared.emv.qr_signature import (
    KEY_ID_CHARS_MAX,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    Signer,
    b64url,
    from_b64url,
)

DOMAIN: Final = "paycode-return/1\n"
PREFIX: Final = "paycode_"
FIELDS: Final = (
    "order",
    "merchant",
    "merchant_order_id",
    "status",
    "payment",
    "amount",
    "currency",
    "time",
    "key",
)
"""The signed fields, in the order the message lists them; `paycode_sig` carries the
signature over them."""
SIG: Final = "sig"
VALUE_CHARS_MAX: Final = 128
"""Longer than any field the server writes (an id is 32, an order id 64)."""
STATUS_PAID: Final = "paid"


class ReturnVerdict(enum.StrEnum):
    """What a merchant learns from the parameters its return URL received."""

    VALID = "valid"
    """Signed by a key the merchant holds, every field as the server wrote it."""
    ALTERED = "altered"
    """Well formed, but the signature does not match: a field was changed after signing."""
    UNKNOWN_KEY = "unknown_key"
    """Signed with a key id the merchant does not hold: fetch the keys again, once."""
    MALFORMED = "malformed"
    """A field missing, repeated, empty, too long or unknown, or a signature of the wrong form."""


@dataclass(frozen=True)
class ReturnCheck:
    verdict: ReturnVerdict
    fields: Mapping[str, str]
    """The signed fields (names without the prefix); empty unless the verdict is VALID."""

    @property
    def valid(self) -> bool:
        return self.verdict is ReturnVerdict.VALID


def _value_ok(value: str) -> bool:
    return 0 < len(value) <= VALUE_CHARS_MAX and value.isprintable()


def signed_message(fields: Mapping[str, str]) -> bytes:
    """DOMAIN and one `name=value` line per field of FIELDS, in that order."""
    lines = "\n".join(f"{name}={fields[name]}" for name in FIELDS)
    return (DOMAIN + lines).encode("utf-8")


def build_return(fields: Mapping[str, str], sign: Signer) -> list[tuple[str, str]]:
    """The `paycode_*` query parameters for `fields` (every name of FIELDS; `key` is the id of
    the key `sign` signs with), signature last. Raises ValueError for a value the format
    cannot carry."""
    if set(fields) != set(FIELDS):
        raise ValueError(f"a return needs exactly the fields {FIELDS}")
    bad = [name for name in FIELDS if not _value_ok(fields[name])]
    if bad or len(fields["key"]) > KEY_ID_CHARS_MAX:
        raise ValueError(f"a return field cannot carry its value: {bad or ['key']}")
    key_id, signature = sign(signed_message(fields))
    if key_id != fields["key"]:
        raise ValueError("the return names another key than the one that signs it")
    assert len(signature) == SIGNATURE_BYTES
    pairs = [(PREFIX + name, fields[name]) for name in FIELDS]
    return [*pairs, (PREFIX + SIG, b64url(signature))]


def _ours(pairs: Sequence[tuple[str, str]]) -> dict[str, str] | None:
    """The `paycode_*` parameters by field name, or None when one is unknown or repeated."""
    found: dict[str, str] = {}
    for name, value in pairs:
        if not name.startswith(PREFIX):
            continue
        field = name[len(PREFIX) :]
        if field not in (*FIELDS, SIG) or field in found:
            return None
        found[field] = value
    return found


def verify_return(
    pairs: Sequence[tuple[str, str]], public_keys: Mapping[str, bytes]
) -> ReturnCheck:
    """Check the query parameters a return URL received (all of them, in order, as
    urllib.parse.parse_qsl(query, keep_blank_values=True) gives them) against the server's
    QR public keys (key id -> 32 bytes)."""
    malformed = ReturnCheck(ReturnVerdict.MALFORMED, {})
    found = _ours(pairs)
    if found is None or set(found) != {*FIELDS, SIG}:
        return malformed
    if not all(_value_ok(found[name]) for name in FIELDS):
        return malformed
    signature = from_b64url(found[SIG])
    if signature is None or len(signature) != SIGNATURE_BYTES:
        return malformed
    public = public_keys.get(found["key"])
    if public is None:
        return ReturnCheck(ReturnVerdict.UNKNOWN_KEY, {})
    assert len(public) == PUBLIC_KEY_BYTES
    fields = {name: found[name] for name in FIELDS}
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, signed_message(fields))
    except InvalidSignature:
        return ReturnCheck(ReturnVerdict.ALTERED, {})
    return ReturnCheck(ReturnVerdict.VALID, fields)
