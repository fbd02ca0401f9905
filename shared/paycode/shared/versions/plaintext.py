"""The 15-byte plaintext that the QR versions (v2, v3) hide: handle, full step, counter, flags."""

from __future__ import annotations

import struct
from typing import NamedTuple

HANDLE_BYTES = 8
COUNTER_MAX = 0xFFFF
_LAYOUT = struct.Struct(">8sIHB")
SIZE = _LAYOUT.size
assert SIZE == 15


class CodeFields(NamedTuple):
    handle: bytes
    step: int
    counter: int
    flags: int


def pack(fields: CodeFields) -> bytes:
    if len(fields.handle) != HANDLE_BYTES:
        raise ValueError(f"handle must be {HANDLE_BYTES} bytes")
    if not 0 <= fields.counter <= COUNTER_MAX:
        raise ValueError(f"counter must be 0..{COUNTER_MAX}")
    if not 0 <= fields.flags <= 0xFF or not 0 <= fields.step < 2**32:
        raise ValueError("flags must fit a byte and step 32 bits")
    return _LAYOUT.pack(fields.handle, fields.step, fields.counter, fields.flags)


def unpack(data: bytes) -> CodeFields:
    assert len(data) == SIZE
    handle, step, counter, flags = _LAYOUT.unpack(data)
    return CodeFields(handle, step, counter, flags)
