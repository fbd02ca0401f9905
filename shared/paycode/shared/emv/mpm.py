"""EMVCo QR Code Specification for Payment Systems, Merchant-Presented Mode (MPM) payloads.

A merchant's printed QR code is text: data objects of a two-digit ID, a two-digit length and
that many characters of value. IDs 26-51 (merchant accounts), 62 (additional data), 64
(language template) and 80-99 (unreserved) hold nested objects. The last object is the CRC
(ID 63): CRC-16/CCITT-FALSE over the UTF-8 bytes of everything up to and including "6304".

Strict in what we write, lenient but safe in what we read. `encode_mpm` refuses anything the
spec forbids. `decode_mpm` reads what national schemes really print (PIX leaves out the city,
DuitNow writes format "02", VietQR has no merchant name), lists each broken rule as a
`Deviation` and only raises, with the offset of the defect, when the text cannot be read
unambiguously: a bad CRC, a truncated or overrunning length, a non-numeric ID or length, a
duplicate ID, a missing CRC. Work is bounded by `PAYLOAD_CHARS_MAX` and `DEPTH_MAX`, so no
input can raise anything but `EmvFormatError` (or its `EmvCrcError`). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from paycode.shared.emv import schemes
from paycode.shared.errors import CurrencyUnknown, EmvCrcError, EmvFormatError
from paycode.shared.money import currency

PAYLOAD_CHARS_MAX: Final = 512
"""The spec caps a payload at 512 characters; longer text is refused before it is read."""
DEPTH_MAX: Final = 2
"""Top level plus one level of templates. Deeper values (62/50-99, VietQR's 38/01) stay text."""
VALUE_CHARS_MAX: Final = 99
HEADER_CHARS: Final = 4
CRC_TAG: Final = "63"
CRC_HEADER: Final = "6304"
CRC_CHARS: Final = 4

_DIGITS: Final = frozenset("0123456789")
_HEX: Final = frozenset("0123456789ABCDEFabcdef")
_ANS_MIN, _ANS_MAX = 0x20, 0x7E
"""The spec's "alphanumeric special" set is printable ASCII; only tag 64 may hold other text."""

_ACCOUNT_TAGS: Final = frozenset(f"{n:02d}" for n in range(2, 52))
_ACCOUNT_TEMPLATE_TAGS: Final = frozenset(f"{n:02d}" for n in range(26, 52))
_UNRESERVED_TAGS: Final = frozenset(f"{n:02d}" for n in range(80, 100))
_RFU_TAGS: Final = frozenset(f"{n:02d}" for n in range(65, 80))
_TEMPLATE_TAGS: Final = _ACCOUNT_TEMPLATE_TAGS | _UNRESERVED_TAGS | {"62", "64"}
_MANDATORY_TAGS: Final = ("00", "52", "53", "58", "59", "60")

_NAMES: Final[Mapping[str, str]] = {
    "00": "payload format indicator",
    "01": "point of initiation method",
    "52": "merchant category code",
    "53": "transaction currency",
    "54": "transaction amount",
    "55": "tip or convenience indicator",
    "56": "convenience fee (fixed)",
    "57": "convenience fee (percentage)",
    "58": "country code",
    "59": "merchant name",
    "60": "merchant city",
    "61": "postal code",
    "62": "additional data",
    "64": "language template",
}
_LENGTHS: Final[Mapping[str, tuple[int, int]]] = {
    "00": (2, 2), "01": (2, 2), "52": (4, 4), "53": (3, 3), "54": (1, 13), "55": (2, 2),
    "56": (1, 13), "57": (1, 5), "58": (2, 2), "59": (1, 25), "60": (1, 15), "61": (1, 10),
    **{f"62/{n:02d}": (1, 25) for n in range(1, 9)}, "62/09": (1, 3),
    "64/00": (2, 2), "64/01": (1, 25), "64/02": (1, 15),
}  # fmt: skip
_FIXED_VALUES: Final[Mapping[str, tuple[str, tuple[str, ...]]]] = {
    "00": ("format_indicator_value", ("01",)),
    "01": ("initiation_method_value", ("11", "12")),
}
_AMOUNT: Final = re.compile(r"[0-9]+(\.[0-9]+)?")
_FORMATS: Final[Mapping[str, re.Pattern[str]]] = {
    "00": re.compile(r"[0-9]{2}"),
    "01": re.compile(r"[0-9]{2}"),
    "52": re.compile(r"[0-9]{4}"),
    "53": re.compile(r"[0-9]{3}"),
    "54": _AMOUNT,
    "55": re.compile(r"0[1-3]"),
    "56": _AMOUNT,
    "57": re.compile(r"[0-9]{1,3}(\.[0-9]{1,2})?"),
    "58": re.compile(r"[A-Z]{2}"),
}


@dataclass(frozen=True, slots=True)
class DataObject:
    """One ID-length-value object; `offset` is where its ID starts in the whole payload."""

    tag: str
    value: str
    offset: int
    children: tuple[DataObject, ...] | None = None
    """Objects nested in a template tag; None for primitives and unreadable 80-99 values."""

    def child(self, tag: str) -> DataObject | None:
        """The nested object with ID `tag`, if this is a template that has one."""
        return next((item for item in self.children or () if item.tag == tag), None)


@dataclass(frozen=True, slots=True)
class Deviation:
    """A spec rule the payload breaks without being unreadable: `rule` is a stable short id."""

    rule: str
    message: str
    tag: str | None = None
    """The ID concerned ("59", or "62/05" for a nested one); None for whole-payload rules."""
    offset: int | None = None

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"


@dataclass(frozen=True, slots=True)
class MpmPayload:
    """A decoded payload: every object in order, the broken rules and the scheme if known."""

    text: str
    objects: tuple[DataObject, ...]
    deviations: tuple[Deviation, ...]
    scheme: str | None

    def find(self, tag: str) -> DataObject | None:
        """The top-level object with ID `tag`, if present."""
        return next((item for item in self.objects if item.tag == tag), None)

    def value(self, tag: str) -> str | None:
        """The value of the top-level object `tag`, if present."""
        found = self.find(tag)
        return None if found is None else found.value

    @property
    def point_of_initiation(self) -> str | None:
        """ "static" (11: reusable poster) or "dynamic" (12: one payment), else None."""
        return {"11": "static", "12": "dynamic"}.get(self.value("01") or "")

    @property
    def merchant_accounts(self) -> tuple[DataObject, ...]:
        """IDs 02-51: card network primitives (02-25) and network templates (26-51)."""
        return tuple(item for item in self.objects if item.tag in _ACCOUNT_TAGS)


FieldValue: TypeAlias = str | Sequence[tuple[str, str]]
"""A primitive's text, or a template's (sub-ID, text) pairs in order."""


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        crc &= 0xFFFF
    return crc


def encode_mpm(fields: Sequence[tuple[str, FieldValue]]) -> str:
    """A payload of `fields` in order, between "000201" and the CRC; raises ValueError naming
    the first rule broken. The result is decoded again and must show no deviation at all."""
    body = "".join(_encode_field(tag, value) for tag, value in fields)
    tags = [tag for tag, _ in fields]
    if len(set(tags)) != len(tags) or {"00", CRC_TAG} & set(tags):
        raise ValueError("field IDs must be unique and must not be 00 or 63 (written here)")
    unsigned = _encode_primitive("00", "01") + body + CRC_HEADER
    if len(unsigned) + CRC_CHARS > PAYLOAD_CHARS_MAX:
        raise ValueError(f"payload would exceed {PAYLOAD_CHARS_MAX} characters")
    payload = unsigned + f"{crc16_ccitt_false(unsigned.encode('utf-8')):04X}"
    try:
        decoded = decode_mpm(payload)
    except EmvFormatError as error:
        raise ValueError(error.message) from error
    if decoded.deviations:
        raise ValueError(str(decoded.deviations[0]))
    return payload


def _encode_field(tag: str, value: FieldValue) -> str:
    if isinstance(value, str):
        return _encode_primitive(tag, value)
    subs = [sub for sub, _ in value]
    if len(set(subs)) != len(subs):
        raise ValueError(f"template {tag} repeats a sub-ID")
    return _encode_primitive(tag, "".join(_encode_primitive(sub, text) for sub, text in value))


def _encode_primitive(tag: str, value: str) -> str:
    if len(tag) != 2 or not set(tag) <= _DIGITS:
        raise ValueError(f"data object ID must be two digits, got {tag[:8]!r}")
    if not 1 <= len(value) <= VALUE_CHARS_MAX:
        raise ValueError(f"value of {tag} must be 1..{VALUE_CHARS_MAX} characters")
    return f"{tag}{len(value):02d}{value}"


def decode_mpm(payload: str) -> MpmPayload:
    """Read a payload; raises EmvFormatError (EmvCrcError for a CRC mismatch) at the offset of
    the defect, and reports every readable rule breach in `deviations` instead."""
    text = _checked_text(payload)
    top = _read_level(text, 0, len(text))
    _check_crc(text, top)
    objects = tuple(_with_children(text, item) for item in top)
    guids = [
        guid.value
        for item in objects
        if item.tag in _ACCOUNT_TEMPLATE_TAGS and (guid := item.child("00")) is not None
    ]
    deviations = tuple(_deviations(objects))
    return MpmPayload(text, objects, deviations, schemes.recognize(guids))


def _checked_text(payload: object) -> str:
    if not isinstance(payload, str):
        raise EmvFormatError(f"payload must be text, got a {type(payload).__name__}", offset=0)
    if len(payload) > PAYLOAD_CHARS_MAX:
        raise EmvFormatError(
            f"payload is {len(payload)} characters, over {PAYLOAD_CHARS_MAX}",
            offset=PAYLOAD_CHARS_MAX,
        )
    try:
        payload.encode("utf-8")
    except UnicodeEncodeError as error:
        raise EmvFormatError("payload holds a lone surrogate", offset=error.start) from None
    return payload


def _read_level(text: str, start: int, end: int) -> tuple[DataObject, ...]:
    """The objects filling text[start:end] exactly, IDs unique; children not yet read."""
    items: list[DataObject] = []
    seen: set[str] = set()
    position = start
    # Bounded: every object takes at least HEADER_CHARS characters.
    for _ in range((end - start) // HEADER_CHARS + 1):
        if position >= end:
            break
        item = _read_item(text, position, end)
        if item.tag in seen:
            raise EmvFormatError(f"data object ID {item.tag} appears twice", offset=position)
        seen.add(item.tag)
        items.append(item)
        position += HEADER_CHARS + len(item.value)
    assert position == end
    return tuple(items)


def _read_item(text: str, position: int, end: int) -> DataObject:
    if end - position < HEADER_CHARS:
        raise EmvFormatError(
            f"truncated data object: {end - position} characters where an ID and a length "
            f"need {HEADER_CHARS}",
            offset=position,
        )
    tag, length_text = text[position : position + 2], text[position + 2 : position + 4]
    if not set(tag) <= _DIGITS:
        raise EmvFormatError(f"data object ID {tag!r} is not two digits", offset=position)
    if not set(length_text) <= _DIGITS:
        raise EmvFormatError(
            f"length {length_text!r} of data object {tag} is not two digits", offset=position + 2
        )
    value_start = position + HEADER_CHARS
    length = int(length_text)
    if value_start + length > end:
        raise EmvFormatError(
            f"data object {tag} declares {length} characters but {end - value_start} remain",
            offset=position + 2,
        )
    return DataObject(tag, text[value_start : value_start + length], position)


def _check_crc(text: str, top: tuple[DataObject, ...]) -> None:
    """The CRC comes last, is four hex digits and matches; checked before any nested read, so
    a damaged payload is reported as damaged rather than as a malformed template."""
    crc = next((item for item in top if item.tag == CRC_TAG), None)
    if crc is None:
        raise EmvFormatError(f"no CRC data object ({CRC_HEADER}....)", offset=len(text))
    if crc is not top[-1]:
        after = crc.offset + HEADER_CHARS + len(crc.value)
        raise EmvFormatError("data follows the CRC, which must come last", offset=after)
    if len(crc.value) != CRC_CHARS:
        raise EmvFormatError(f"CRC length is {len(crc.value)}, not 04", offset=crc.offset + 2)
    value_offset = crc.offset + HEADER_CHARS
    computed = crc16_ccitt_false(text[:value_offset].encode("utf-8"))
    if not set(crc.value) <= _HEX or int(crc.value, 16) != computed:
        raise EmvCrcError(
            f"CRC {crc.value!r} does not match the payload (computed {computed:04X})",
            offset=value_offset,
        )


def _with_children(text: str, item: DataObject) -> DataObject:
    """Read a template's nested objects (depth 2 is the last level we parse). An unreserved
    template (80-99) that does not parse is kept as text: schemes use those IDs freely."""
    if item.tag not in _TEMPLATE_TAGS:
        return item
    start = item.offset + HEADER_CHARS
    try:
        children = _read_level(text, start, start + len(item.value))
    except EmvFormatError:
        if item.tag in _UNRESERVED_TAGS:
            return item
        raise
    return DataObject(item.tag, item.value, item.offset, children)


def _deviations(objects: tuple[DataObject, ...]) -> Iterator[Deviation]:
    yield from _header_rules(objects)
    present = {item.tag for item in objects}
    for tag in _MANDATORY_TAGS:
        if tag not in present:
            yield Deviation("mandatory_missing", f"{_NAMES[tag]} ({tag}) is missing", tag)
    if not present & _ACCOUNT_TAGS:
        yield Deviation("mandatory_missing", "no merchant account (02-51)", "02-51")
    for item in objects:
        yield from _field_rules(item.tag, item)
        yield from _template_rules(item)
    yield from _amount_rules(objects)


def _header_rules(objects: tuple[DataObject, ...]) -> Iterator[Deviation]:
    first = objects[0]
    if first.tag != "00":
        yield Deviation("format_indicator_first", "00 is not the first object", "00", 0)
    crc = objects[-1]
    if crc.value != crc.value.upper():
        yield Deviation("crc_lowercase", "CRC is in lowercase hex", CRC_TAG, crc.offset)
    for item in objects:
        if item.tag in _FIXED_VALUES and item.value not in _FIXED_VALUES[item.tag][1]:
            rule, wanted = _FIXED_VALUES[item.tag]
            message = f"{_NAMES[item.tag]} is {item.value!r}, not {' or '.join(wanted)}"
            yield Deviation(rule, message, item.tag, item.offset)


def _field_rules(key: str, item: DataObject) -> Iterator[Deviation]:
    """Length, format and character set of one primitive; `key` is "59" or "62/05"."""
    name = _NAMES.get(key, key)
    low, high = _LENGTHS.get(key, (1, VALUE_CHARS_MAX))
    if not low <= len(item.value) <= high:
        limit = f"{low}" if low == high else f"{low}-{high}"
        message = f"{name} is {len(item.value)} characters; the spec allows {limit}"
        yield Deviation("field_length", message, key, item.offset)
    pattern = _FORMATS.get(key)
    if pattern is not None and not pattern.fullmatch(item.value):
        yield Deviation("field_format", f"{name} {item.value!r} is malformed", key, item.offset)
    if item.tag in _RFU_TAGS and "/" not in key:
        yield Deviation("reserved_id", f"ID {key} is reserved for EMVCo", key, item.offset)
    if item.children is None and not key.startswith("64") and not _is_ans(item.value):
        message = f"{name} has characters outside printable ASCII"
        yield Deviation("character_set", message, key, item.offset)


def _template_rules(item: DataObject) -> Iterator[Deviation]:
    if item.tag in _UNRESERVED_TAGS and item.children is None:
        message = f"unreserved template {item.tag} is not a list of data objects"
        yield Deviation("template_unparsed", message, item.tag, item.offset)
    needs_guid = item.tag in _ACCOUNT_TEMPLATE_TAGS | _UNRESERVED_TAGS
    if needs_guid and item.children is not None and item.child("00") is None:
        message = f"template {item.tag} has no globally unique identifier (00)"
        yield Deviation("template_guid_missing", message, item.tag, item.offset)
    if item.tag == "64" and item.children is not None:
        for sub in ("00", "01"):
            if item.child(sub) is None:
                message = f"language template lacks {sub}"
                yield Deviation("mandatory_missing", message, f"64/{sub}", item.offset)
    for child in item.children or ():
        yield from _field_rules(f"{item.tag}/{child.tag}", child)


def _amount_rules(objects: tuple[DataObject, ...]) -> Iterator[Deviation]:
    """Decimals beyond the currency's minor unit, and fee fields without their indicator."""
    by_tag = {item.tag: item for item in objects}
    amount, numeric = by_tag.get("54"), by_tag.get("53")
    if amount is not None and numeric is not None and _AMOUNT.fullmatch(amount.value):
        digits = _minor_digits(numeric.value)
        decimals = len(amount.value.partition(".")[2])
        if digits is not None and decimals > digits:
            message = f"amount has {decimals} decimals; currency {numeric.value} has {digits}"
            yield Deviation("amount_minor_digits", message, "54", amount.offset)
    indicator = by_tag.get("55")
    for fee_tag, wanted in (("56", "02"), ("57", "03")):
        fee = by_tag.get(fee_tag)
        if (fee is not None) != (indicator is not None and indicator.value == wanted):
            message = f"{_NAMES[fee_tag]} ({fee_tag}) goes with indicator 55 = {wanted}"
            at = fee or indicator
            yield Deviation("convenience_fee", message, fee_tag, None if at is None else at.offset)


def _minor_digits(numeric: str) -> int | None:
    """Minor digits of an ISO 4217 numeric code we support; None for anything else."""
    if not _FORMATS["53"].fullmatch(numeric):
        return None
    try:
        return currency(numeric).minor_digits
    except CurrencyUnknown:
        return None


def _is_ans(value: str) -> bool:
    return all(_ANS_MIN <= ord(char) <= _ANS_MAX for char in value)
