"""EMVCo QR Code Specification for Payment Systems, Consumer-Presented Mode (CPM) payloads.

A CPM QR code is base64 text of BER-TLV: the Payload Format Indicator (85, "CPV01"), one or more
Application Templates (61), optionally a Common Data Template (62). Templates may nest the
transparent templates 63 (inside 61) and 64 (inside 62). The asymmetric code version (docs/spec.md
§6)
rides in this container so that a scanner recognises it as a payment code by its `hQVDUFY`
prefix. This module reads and writes only the container; what the tags mean to us lives in the
code version that uses it. Tags we do not know are kept in `tlvs`, never rejected.
"""

from __future__ import annotations

import base64
import binascii
import string
from collections.abc import Sequence
from dataclasses import dataclass

from paycode.shared.emv.tlv import Tlv, decode_tlv, encode_constructed, encode_tlv, find_tlv
from paycode.shared.errors import EmvFormatError

PAYLOAD_FORMAT_INDICATOR = "CPV01"
TEXT_CHARS_MAX = 2048
"""Longest QR text we read; a version 40 QR code holds under 3 KB and ours are far smaller."""

TAG_PAYLOAD_FORMAT_INDICATOR = 0x85
TAG_APPLICATION_TEMPLATE = 0x61
TAG_COMMON_DATA_TEMPLATE = 0x62
TAG_APPLICATION_SPECIFIC_TRANSPARENT_TEMPLATE = 0x63
TAG_COMMON_DATA_TRANSPARENT_TEMPLATE = 0x64
TAG_AID = 0x4F
TAG_APPLICATION_LABEL = 0x50
TAG_TRACK2_EQUIVALENT = 0x57
TAG_PAN = 0x5A
TAG_CARDHOLDER_NAME = 0x5F20
TAG_LANGUAGE_PREFERENCE = 0x5F2D
TAG_APPLICATION_VERSION = 0x9F08

_BASE64_CHARS = frozenset(string.ascii_letters + string.digits + "+/=")
_PRINTABLE_MIN = 0x20
_PRINTABLE_MAX = 0x7E


@dataclass(frozen=True, slots=True)
class CpmApplication:
    """The fields of one Application Template (61), or of the Common Data Template (62)."""

    aid: bytes | None
    label: str | None
    track2: bytes | None
    pan: str | None
    """Digits of the BCD PAN, its trailing F pad nibble removed."""
    cardholder_name: str | None
    language_preference: str | None
    app_version: bytes | None
    tlvs: tuple[Tlv, ...]
    """Every child of the template, known or not, including nested 63/64 templates."""


@dataclass(frozen=True, slots=True)
class CpmPayload:
    """A decoded CPM payload; `tlvs` is the whole top-level TLV sequence."""

    format_indicator: str
    applications: tuple[CpmApplication, ...]
    common: CpmApplication | None
    tlvs: tuple[Tlv, ...]


def decode_cpm(text: str) -> CpmPayload:
    """Decode CPM QR text; any defect raises `EmvFormatError`.

    Offsets are character offsets for base64 defects and byte offsets in the decoded payload for
    everything else.
    """
    items = decode_tlv(_decode_base64(text))
    _check_format_indicator(items[0])
    applications, common = _templates(items[1:])
    return CpmPayload(
        format_indicator=PAYLOAD_FORMAT_INDICATOR,
        applications=applications,
        common=common,
        tlvs=items,
    )


def encode_cpm(applications: Sequence[bytes], common: bytes | None = None) -> str:
    """Encode CPM QR text from the encoded children of each Application Template (and 62).

    Raises ValueError unless the result decodes, so a bad caller fails here, not at the till.
    """
    if not applications:
        raise ValueError("a CPM payload needs at least one application template")
    parts = [encode_tlv(TAG_PAYLOAD_FORMAT_INDICATOR, PAYLOAD_FORMAT_INDICATOR.encode("ascii"))]
    parts += [encode_constructed(TAG_APPLICATION_TEMPLATE, item) for item in applications]
    if common is not None:
        parts.append(encode_constructed(TAG_COMMON_DATA_TEMPLATE, common))
    text = base64.b64encode(b"".join(parts)).decode("ascii")
    try:
        decode_cpm(text)
    except EmvFormatError as error:
        raise ValueError(f"encoded CPM payload would not decode: {error.message}") from error
    return text


def _decode_base64(text: str) -> bytes:
    """Strict base64: standard alphabet, padded, canonical; errors give the character offset."""
    if len(text) > TEXT_CHARS_MAX:
        raise EmvFormatError(f"QR text longer than {TEXT_CHARS_MAX} chars", offset=TEXT_CHARS_MAX)
    if not text:
        raise EmvFormatError("empty QR text", offset=0)
    _check_base64_shape(text)
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as error:  # unreachable after the shape check; kept as a backstop
        raise EmvFormatError(f"invalid base64: {error}", offset=0) from error
    if base64.b64encode(raw).decode("ascii") != text:
        raise EmvFormatError("non-canonical base64", offset=len(text.rstrip("=")) - 1)
    return raw


def _check_base64_shape(text: str) -> None:
    """Reject bad characters, an incomplete last group and misplaced padding, in that order."""
    for index, char in enumerate(text):
        if char not in _BASE64_CHARS:
            raise EmvFormatError("invalid base64 character", offset=index)
    remainder = len(text) % 4
    if remainder:
        raise EmvFormatError("base64 text is not padded", offset=len(text) - remainder)
    first_pad = text.find("=")
    if first_pad != -1 and (first_pad < len(text) - 2 or text[first_pad:].strip("=")):
        raise EmvFormatError("misplaced base64 padding", offset=first_pad)


def _check_format_indicator(first: Tlv) -> None:
    if first.tag != TAG_PAYLOAD_FORMAT_INDICATOR:
        raise EmvFormatError("payload does not start with the format indicator 85", offset=0)
    if first.value != PAYLOAD_FORMAT_INDICATOR.encode("ascii"):
        raise EmvFormatError("payload format indicator is not CPV01", offset=first.value_offset)


def _templates(items: Sequence[Tlv]) -> tuple[tuple[CpmApplication, ...], CpmApplication | None]:
    """Split the items after 85 into application templates and the one common template."""
    applications: list[CpmApplication] = []
    common: CpmApplication | None = None
    for item in items:
        if item.tag == TAG_PAYLOAD_FORMAT_INDICATOR:
            raise EmvFormatError("repeated payload format indicator", offset=item.offset)
        if item.tag == TAG_APPLICATION_TEMPLATE:
            applications.append(_application(item))
        elif item.tag == TAG_COMMON_DATA_TEMPLATE:
            if common is not None:
                raise EmvFormatError("repeated common data template 62", offset=item.offset)
            common = _application(item)
    if not applications:
        raise EmvFormatError("payload has no application template 61", offset=0)
    return tuple(applications), common


def _application(template: Tlv) -> CpmApplication:
    children = template.children or ()
    return CpmApplication(
        aid=_binary(children, TAG_AID),
        label=_text(children, TAG_APPLICATION_LABEL),
        track2=_binary(children, TAG_TRACK2_EQUIVALENT),
        pan=_pan(children),
        cardholder_name=_text(children, TAG_CARDHOLDER_NAME),
        language_preference=_text(children, TAG_LANGUAGE_PREFERENCE),
        app_version=_binary(children, TAG_APPLICATION_VERSION),
        tlvs=children,
    )


def _binary(items: Sequence[Tlv], tag: int) -> bytes | None:
    item = find_tlv(items, tag)
    return None if item is None else item.value


def _text(items: Sequence[Tlv], tag: int) -> str | None:
    """Printable ASCII (EMV format 'ans'); the offset names the first offending byte."""
    item = find_tlv(items, tag)
    if item is None:
        return None
    for index, byte in enumerate(item.value):
        if not _PRINTABLE_MIN <= byte <= _PRINTABLE_MAX:
            raise EmvFormatError(f"tag {tag:X} is not ASCII text", offset=item.value_offset + index)
    return item.value.decode("ascii")


def _pan(items: Sequence[Tlv]) -> str | None:
    """BCD digits (EMV format 'cn'): one trailing F pads an odd count, nothing else is allowed."""
    item = find_tlv(items, TAG_PAN)
    if item is None:
        return None
    digits = item.value.hex().upper()
    digits = digits.removesuffix("F")
    for index, nibble in enumerate(digits):
        if not nibble.isdigit():
            raise EmvFormatError("PAN is not BCD digits", offset=item.value_offset + index // 2)
    if not digits:
        raise EmvFormatError("PAN has no digits", offset=item.offset)
    return digits
