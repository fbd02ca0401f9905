"""BER-TLV as EMV uses it (EMV Book 3, Annex B): strict decoding, canonical encoding.

A scanned payment code is hostile input, so `decode_tlv` accepts one spelling per tree and turns
every defect into `EmvFormatError` with the byte offset of the broken element; it never lets an
IndexError or RecursionError out. Lengths must use the shortest definite form, so every decoded
tree re-encodes to the same bytes and `Tlv.value_offset` can be derived instead of stored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from paycode.shared.errors import EmvFormatError

TAG_SIZE_MAX = 3
"""Bytes in the longest tag we accept; EMV defines none longer."""
LENGTH_FIELD_SIZE_MAX = 4
"""Bytes in the longest length field: 0x83 plus three length bytes (values below 16 MiB)."""
VALUE_SIZE_MAX = 0xFFFFFF
DEPTH_LIMIT = 64
"""Largest `max_depth` a caller may ask for; keeps recursion far from Python's own limit."""
WALK_ITEMS_MAX = 4096

_CONSTRUCTED_BIT = 0x20
_TAG_NUMBER_MASK = 0x1F
_MORE_BIT = 0x80
"""In a tag byte after the first: another tag byte follows."""
_LONG_FORM_BIT = 0x80
"""In a length field's first byte: the low bits count the length bytes that follow."""
_SHORT_FORM_MAX = 0x7F


@dataclass(frozen=True, slots=True)
class Tlv:
    """One decoded data object; `offset` is where its tag starts in the decoded buffer."""

    tag: int
    value: bytes
    offset: int
    children: tuple[Tlv, ...] | None
    """Decoded children of a constructed tag (bit 0x20 of the first tag byte); else None."""

    @property
    def constructed(self) -> bool:
        """True when the tag says the value is itself a TLV sequence."""
        return _is_constructed(self.tag)

    @property
    def value_offset(self) -> int:
        """Where the value starts; exact because decoding only accepts canonical lengths."""
        return self.offset + _tag_size(self.tag) + _length_field_size(len(self.value))


@dataclass(slots=True)
class _Limits:
    """Bounds shared by every level of one decode, so the whole tree is bounded, not each level."""

    max_depth: int
    items_left: int

    def take_item(self, offset: int) -> None:
        if self.items_left <= 0:
            raise EmvFormatError("too many TLV items", offset=offset)
        self.items_left -= 1


def decode_tlv(data: bytes, *, max_depth: int = 8, max_items: int = 256) -> tuple[Tlv, ...]:
    """Decode a whole buffer of BER-TLV items; any defect raises `EmvFormatError`.

    `max_depth` counts nesting levels (top level is 1); `max_items` counts items in the whole
    tree. Both bound the work an attacker-chosen buffer can cause.
    """
    if not 1 <= max_depth <= DEPTH_LIMIT:
        raise ValueError(f"max_depth must be within 1..{DEPTH_LIMIT}")
    if max_items < 1:
        raise ValueError("max_items must be positive")
    buffer = bytes(data)
    if not buffer:
        raise EmvFormatError("empty TLV data", offset=0)
    limits = _Limits(max_depth=max_depth, items_left=max_items)
    return _decode_items(buffer, 0, len(buffer), 1, limits)


def _decode_items(
    data: bytes, start: int, end: int, depth: int, limits: _Limits
) -> tuple[Tlv, ...]:
    """Decode the items filling data[start:end] exactly."""
    items: list[Tlv] = []
    position = start
    # Bounded: every pass consumes at least two bytes and one unit of `limits.items_left`.
    while position < end:
        item, position = _decode_item(data, position, end, depth, limits)
        items.append(item)
    assert position == end
    return tuple(items)


def _decode_item(
    data: bytes, offset: int, end: int, depth: int, limits: _Limits
) -> tuple[Tlv, int]:
    """Decode the item whose tag starts at `offset`; return it and the offset after it."""
    if depth > limits.max_depth:
        raise EmvFormatError(f"TLV nested deeper than {limits.max_depth} levels", offset=offset)
    limits.take_item(offset)
    tag, length_offset = _read_tag(data, offset, end)
    length, value_offset = _read_length(data, length_offset, end, item_offset=offset)
    value_end = value_offset + length
    if value_end > end:
        raise EmvFormatError(
            f"value of {length} bytes overruns its container", offset=length_offset
        )
    children = None
    if _is_constructed(tag):
        children = _decode_items(data, value_offset, value_end, depth + 1, limits)
    return Tlv(tag, data[value_offset:value_end], offset, children), value_end


def _read_tag(data: bytes, offset: int, end: int) -> tuple[int, int]:
    """Read a 1-3 byte tag at `offset`; errors point at the tag's first byte."""
    tag = data[offset]
    position = offset + 1
    if tag & _TAG_NUMBER_MASK != _TAG_NUMBER_MASK:
        return tag, position
    for _ in range(TAG_SIZE_MAX - 1):
        if position >= end:
            raise EmvFormatError("truncated multi-byte tag", offset=offset)
        byte = data[position]
        tag = (tag << 8) | byte
        position += 1
        if not byte & _MORE_BIT:
            return tag, position
    raise EmvFormatError(f"tag longer than {TAG_SIZE_MAX} bytes", offset=offset)


def _read_length(data: bytes, offset: int, end: int, *, item_offset: int) -> tuple[int, int]:
    """Read a definite, minimal length field at `offset`; return (length, value offset)."""
    if offset >= end:
        raise EmvFormatError("length missing after tag", offset=item_offset)
    first = data[offset]
    if first <= _SHORT_FORM_MAX:
        return first, offset + 1
    count = first & _SHORT_FORM_MAX
    if count == 0:
        raise EmvFormatError("indefinite length is not allowed", offset=offset)
    if count >= LENGTH_FIELD_SIZE_MAX:
        raise EmvFormatError(f"length field of {count} bytes is too long", offset=offset)
    if offset + 1 + count > end:
        raise EmvFormatError("truncated length field", offset=offset)
    length = int.from_bytes(data[offset + 1 : offset + 1 + count], "big")
    if _length_field_size(length) != 1 + count:
        raise EmvFormatError("length not in its shortest form", offset=offset)
    return length, offset + 1 + count


def encode_tlv(tag: int, value: bytes) -> bytes:
    """Encode one item with the shortest length form; ValueError on a malformed tag or value.

    A constructed tag takes `value` as given: use `encode_constructed` to build one from items.
    """
    tag_bytes = _tag_bytes(tag)
    if len(value) > VALUE_SIZE_MAX:
        raise ValueError(f"value longer than {VALUE_SIZE_MAX} bytes")
    return tag_bytes + _length_field(len(value)) + bytes(value)


def encode_constructed(tag: int, *children: bytes) -> bytes:
    """Encode a constructed item whose value is the concatenation of encoded `children`."""
    if not _is_constructed(tag):
        raise ValueError(f"tag {tag:X} is not constructed (bit 0x20 of its first byte)")
    return encode_tlv(tag, b"".join(children))


def find_tlv(items: Sequence[Tlv], tag: int) -> Tlv | None:
    """First item with `tag` at this level only; EMV templates list each tag once."""
    for item in items:
        if item.tag == tag:
            return item
    return None


def walk_tlv(items: Sequence[Tlv], *, max_items: int = WALK_ITEMS_MAX) -> Iterator[Tlv]:
    """Yield every item depth-first, parents before children; ValueError past `max_items`."""
    stack = list(reversed(items))
    for _ in range(max_items):
        if not stack:
            return
        item = stack.pop()
        yield item
        stack.extend(reversed(item.children or ()))
    if stack:
        raise ValueError(f"TLV tree has more than {max_items} items")


def _tag_bytes(tag: int) -> bytes:
    """The bytes of a well-formed 1-3 byte tag; ValueError for anything else."""
    if isinstance(tag, bool) or not isinstance(tag, int) or not 0 <= tag < 1 << 24:
        raise ValueError(f"tag must be an int within 0..0xFFFFFF, not {tag!r}")
    raw = tag.to_bytes(_tag_size(tag), "big")
    multi_byte = raw[0] & _TAG_NUMBER_MASK == _TAG_NUMBER_MASK
    middle_ok = all(byte & _MORE_BIT for byte in raw[1:-1])
    last_ok = len(raw) == 1 or not raw[-1] & _MORE_BIT
    if multi_byte != (len(raw) > 1) or not (middle_ok and last_ok):
        raise ValueError(f"tag {tag:X} is not a well-formed BER tag")
    return raw


def _tag_size(tag: int) -> int:
    return max(1, (tag.bit_length() + 7) // 8)


def _is_constructed(tag: int) -> bool:
    first_byte = tag >> (8 * (_tag_size(tag) - 1))
    return bool(first_byte & _CONSTRUCTED_BIT)


def _length_field_size(length: int) -> int:
    if length <= _SHORT_FORM_MAX:
        return 1
    return 1 + (length.bit_length() + 7) // 8


def _length_field(length: int) -> bytes:
    """Shortest definite length field: one byte below 128, else 0x8N and N big-endian bytes."""
    size = _length_field_size(length)
    if size == 1:
        return bytes([length])
    return bytes([_LONG_FORM_BIT | (size - 1)]) + length.to_bytes(size - 1, "big")
