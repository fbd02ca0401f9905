"""The server's Ed25519 signature on the merchant QR payloads it issues (docs/spec.md, section 12).

A printed CRC proves nothing: anyone can re-encode a payload with another amount or payee name
and a fresh CRC. Every collection payload the server issues (posters, fixed-amount posters,
dynamic orders) therefore ends, just before the CRC, with two unreserved EMV templates:

    80: 00 "dev.paycode", 01 key id, 02 signature (base64url, first 43 characters)
    81: 00 "dev.paycode", 01 signature (base64url, last 43 characters)

One template cannot hold it: a value is at most 99 characters, and the GUID, a key id and 86
characters of signature do not fit. The signature covers DOMAIN followed by the payload's text
from its first character up to the "80" of the first template (UTF-8): every field a wallet shows
or the server acts on (merchant id, terminal, order token, names, city, language template,
currency, amount, references) comes before it. Nothing may follow 81 but the CRC.

Pure: the keys come in as bytes, the signer as a function.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from paycode.shared.emv.mpm import CRC_TAG, FieldValue, MpmPayload
from paycode.shared.errors import EmvFormatError

GUID: Final = "dev.paycode"
DOMAIN: Final = b"paycode-mpm-signature/1\n"
FIRST_TAG, SECOND_TAG = "80", "81"
SIGNATURE_BYTES: Final = 64
PUBLIC_KEY_BYTES: Final = 32
KEY_ID_CHARS_MAX: Final = 32
_HALF_CHARS: Final = 43

Signer = Callable[[bytes], tuple[str, bytes]]
"""Signs a message: (key id, 64-byte Ed25519 signature). The server's QR key does this."""


class Verdict(enum.StrEnum):
    """What a payload's signature says, as a wallet tells the consumer."""

    VERIFIED = "verified"
    """Signed by a key the wallet knows, and unaltered."""
    UNSIGNED = "unsigned"
    """No signature: not issued by a Paycode server (or made before signatures)."""
    UNKNOWN_KEY = "unknown_key"
    """Signed with a key this wallet does not know: another server, or a key it must refresh."""
    ALTERED = "altered"
    """The signature does not match the payload: something was changed after signing."""


@dataclass(frozen=True)
class QrSignature:
    key_id: str
    signature: bytes
    message: bytes
    """DOMAIN + the payload text the signature covers."""


def b64url(data: bytes) -> str:
    """Base64url without padding: signatures in 80/81 and QR public keys in the API."""
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def from_b64url(text: str) -> bytes | None:
    """The bytes of unpadded base64url `text`; None when it is not exactly the text `b64url`
    writes for them (only A-Z a-z 0-9 - _, no padding, no stray low bits): one signature has
    one spelling, so a payload cannot be re-spelled and still read as the one issued."""
    if not BASE64URL.fullmatch(text):
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if b64url(data) == text else None


def signed_message(covered_text: str) -> bytes:
    return DOMAIN + covered_text.encode("utf-8")


def signature_fields(key_id: str, signature: bytes) -> list[tuple[str, FieldValue]]:
    """Templates 80 and 81 for `signature`, to append after every other field."""
    assert len(signature) == SIGNATURE_BYTES
    assert 0 < len(key_id) <= KEY_ID_CHARS_MAX and key_id.isascii() and key_id.isprintable()
    text = b64url(signature)
    assert len(text) == 2 * _HALF_CHARS
    return [
        (FIRST_TAG, [("00", GUID), ("01", key_id), ("02", text[:_HALF_CHARS])]),
        (SECOND_TAG, [("00", GUID), ("01", text[_HALF_CHARS:])]),
    ]


def read_signature(payload: str, decoded: MpmPayload) -> QrSignature | None:
    """The signature templates of `decoded` (decoded from `payload`), or None if it has none.
    Raises EmvFormatError when they are present but broken or not where they must be."""
    first, second = decoded.find(FIRST_TAG), decoded.find(SECOND_TAG)
    if first is None and second is None:
        return None
    if first is None or second is None:
        found = first or second
        assert found is not None
        raise EmvFormatError("a Paycode signature needs both 80 and 81", offset=found.offset)
    tags = [item.tag for item in decoded.objects]
    if tags[-3:] != [FIRST_TAG, SECOND_TAG, CRC_TAG]:
        raise EmvFormatError(
            "the signature must come last, just before the CRC", offset=first.offset
        )
    for template in (first, second):
        guid = template.child("00")
        if guid is None or guid.value != GUID:
            raise EmvFormatError(
                "signature template without the Paycode GUID", offset=template.offset
            )
    key_id, head, tail = first.child("01"), first.child("02"), second.child("01")
    if key_id is None or head is None or tail is None:
        raise EmvFormatError("signature template is missing a field", offset=first.offset)
    signature = from_b64url(head.value + tail.value)
    if signature is None:
        raise EmvFormatError("signature is not base64url", offset=head.offset)
    if len(signature) != SIGNATURE_BYTES:
        raise EmvFormatError("signature is not 64 bytes", offset=head.offset)
    return QrSignature(key_id.value, signature, signed_message(payload[: first.offset]))


def verify_signature(found: QrSignature | None, public_keys: Mapping[str, bytes]) -> Verdict:
    """The verdict on `found` against the server's QR public keys (key id -> 32 bytes)."""
    if found is None:
        return Verdict.UNSIGNED
    public = public_keys.get(found.key_id)
    if public is None:
        return Verdict.UNKNOWN_KEY
    assert len(public) == PUBLIC_KEY_BYTES
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(found.signature, found.message)
    except InvalidSignature:
        return Verdict.ALTERED
    return Verdict.VERIFIED
