"""Version 4: the offline code in an EMVCo Consumer-Presented Mode container (docs/offline.md §3.2).

    85 05 "CPV01"                         payload format indicator
    61 81 EB                              application template
       4F 09 F0 "PAYCODE" 04              proprietary AID, v4
       63 81 DD                           application specific transparent template
          DF11 81 89 <cert, 137>
          DF12 0A    <payment, 10>
          DF13 40    <device_sig, 64>

245 bytes, 328 characters of standard padded base64. What the fields mean and how a till
checks them is `paycode.shared.offline`; this module only writes and strictly reads the frame.
Routed by `registry.ROUTED` (an offline version: `registry.OFFLINE_VERSIONS`), not a device
version of `registry.VERSIONS`.
"""

from __future__ import annotations

import base64
import binascii

from paycode.shared.emv.tlv import decode_tlv, encode_constructed, encode_tlv, find_tlv
from paycode.shared.errors import CodeMalformed
from paycode.shared.offline import (
    AID4,
    CERT_BYTES,
    PAYMENT_BYTES,
    SIGNATURE_BYTES,
    OfflineCode,
    pack_payment,
    parse_certificate,
    unpack_payment,
)

VERSION = "v4"
AID = AID4
PAYLOAD_BYTES = 245
LENGTH = 4 * ((PAYLOAD_BYTES + 2) // 3)

TAG_FORMAT, TAG_APP, TAG_AID, TAG_APP_DATA = 0x85, 0x61, 0x4F, 0x63
TAG_CERT, TAG_PAYMENT, TAG_SIGNATURE = 0xDF11, 0xDF12, 0xDF13
_FORMAT_INDICATOR = b"CPV01"
_SIZES = {TAG_CERT: CERT_BYTES, TAG_PAYMENT: PAYMENT_BYTES, TAG_SIGNATURE: SIGNATURE_BYTES}


def _container(cert: bytes, payment: bytes, signature: bytes) -> bytes:
    app_data = (
        encode_tlv(TAG_CERT, cert)
        + encode_tlv(TAG_PAYMENT, payment)
        + encode_tlv(TAG_SIGNATURE, signature)
    )
    application = encode_tlv(TAG_AID, AID) + encode_constructed(TAG_APP_DATA, app_data)
    return encode_tlv(TAG_FORMAT, _FORMAT_INDICATOR) + encode_constructed(TAG_APP, application)


PREFIX = base64.b64encode(
    _container(bytes(CERT_BYTES), bytes(PAYMENT_BYTES), bytes(SIGNATURE_BYTES))[:21]
).decode()
"""The constant first 28 characters: format indicator, template header and AID."""


def encode(code: OfflineCode) -> str:
    """The code's one spelling."""
    payload = _container(code.certificate.raw, pack_payment(code.payment), code.device_sig)
    assert len(payload) == PAYLOAD_BYTES
    return base64.b64encode(payload).decode()


def _payload(text: str) -> bytes:
    if not isinstance(text, str) or len(text) != LENGTH or not text.startswith(PREFIX):
        raise CodeMalformed(f"a v4 code is {LENGTH} base64 characters starting {PREFIX}")
    try:
        payload = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise CodeMalformed("a v4 code is not valid base64") from error
    if base64.b64encode(payload) != text.encode():
        # The last group's unused low bits would give one code other spellings.
        raise CodeMalformed("a v4 code is not canonical base64")
    return payload


def parse(text: str) -> OfflineCode:
    """The certificate, payment and signature of a well-formed v4 code; CodeMalformed else."""
    payload = _payload(text)
    items = decode_tlv(payload)
    application = find_tlv(items, TAG_APP)
    app_data = find_tlv(application.children or (), TAG_APP_DATA) if application else None
    fields = app_data.children or () if app_data else ()
    values: dict[int, bytes] = {}
    for tag, size in _SIZES.items():
        found = find_tlv(fields, tag)
        if found is None or len(found.value) != size:
            raise CodeMalformed(f"a v4 code needs a {size}-byte field {tag:X}")
        values[tag] = found.value
    cert, payment, signature = values[TAG_CERT], values[TAG_PAYMENT], values[TAG_SIGNATURE]
    if _container(cert, payment, signature) != payload:
        # Swapped, repeated or extra fields would give one code other spellings; the till
        # keys its log on the text's digest as well as on (cert_id, counter).
        raise CodeMalformed("a v4 code has one spelling: DF11, DF12, DF13, nothing else")
    return OfflineCode(parse_certificate(cert), unpack_payment(payment), signature)


class OfflineV4:
    """The pieces of a code version that routing needs (`registry.RoutedVersion`)."""

    version = VERSION
    prefix = PREFIX
    symbology = "qr"

    def matches(self, text: str) -> bool:
        return text.startswith(PREFIX)

    def parse(self, text: str) -> OfflineCode:
        return parse(text)


CODEC = OfflineV4()
