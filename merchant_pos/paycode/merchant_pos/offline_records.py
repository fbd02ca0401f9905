"""The records of the till's offline log (docs/offline.md 4.3) and their one spelling.

A line is a JSON object with sorted keys and no spaces: the server rebuilds an `accept` line
from what sync sends and checks its SHA-256 against the next record's `prev` (section 6.1), so
there is exactly one way to write each record, and `parse` accepts that way only. Every field
is bounded, amounts are integers of minor units, and a line is read only if it could have
been written.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from paycode.shared.codes import ErrorCode
from paycode.shared.errors import PaycodeError

FORMAT = 1
GENESIS_HASH = "0" * 64
"""`prev` of seq 1."""
RECORD_BYTES_MAX = 2048
"""A v4 code is 328 characters and the other fields about 300 bytes: room, and a bound."""
ORDER_CHARS_MAX = 64
"""As the server's merchant order ids."""
CODE_CHARS_MAX = 512
"""As `TEXT_CHARS_MAX` of shared/paycode/shared/versions/registry.py."""
U32_MAX = 2**32 - 1
RESULTS = frozenset(
    {"paid", "paid_short", "unpaid", "late", "refused_invalid", "duplicate", "duplicate_order"}
)
MOVES_NOTHING = frozenset({"duplicate", "duplicate_order"})
"""Results whose paid and loss need not add up to the amount (docs/offline.md 6.2)."""

_ID = re.compile(r"acc_[0-9a-f]{16}", re.ASCII)
_CERT = re.compile(r"[0-9a-f]{32}", re.ASCII)
_HASH = re.compile(r"[0-9a-f]{64}", re.ASCII)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
_CODE = re.compile(r"[\x21-\x7e]+", re.ASCII)
_ACCEPT_KEYS = frozenset(
    {"amount_minor", "at_s", "cert", "code", "counter", "currency", "id", "kind", "order"}
    | {"prev", "seq", "v"}
)
_SYNCED_KEYS = frozenset({"id", "kind", "loss_minor", "paid_minor", "result", "v"})


class LineInvalid(PaycodeError, ValueError):
    """A line that is not a record, or not one that follows those before it. The log decides
    what it means: a torn write when it is the last line (cut), damage before it (refused)."""

    code = ErrorCode.OFFLINE_LOG_DAMAGED


@dataclass(frozen=True)
class Acceptance:
    """One offline sale the till acknowledged (PAID OFFLINE), in the log's words."""

    id: str
    seq: int
    prev: str
    order: str
    cert: str
    counter: int
    code: str
    amount_minor: int
    currency: str
    at_s: int

    def fields(self) -> dict[str, Any]:
        return {
            "amount_minor": self.amount_minor, "at_s": self.at_s, "cert": self.cert,
            "code": self.code, "counter": self.counter, "currency": self.currency,
            "id": self.id, "kind": "accept", "order": self.order, "prev": self.prev,
            "seq": self.seq, "v": FORMAT,
        }  # fmt: skip


@dataclass(frozen=True)
class Synced:
    """The server's final answer for one acceptance (docs/offline.md section 5)."""

    id: str
    result: str
    paid_minor: int
    loss_minor: int

    def fields(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": "synced", "loss_minor": self.loss_minor,
            "paid_minor": self.paid_minor, "result": self.result, "v": FORMAT,
        }  # fmt: skip


def encode(fields: dict[str, Any]) -> bytes:
    """The one spelling of a record: the server rebuilds these bytes to check the chain."""
    return json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()


def chain_hash(line: bytes) -> str:
    """`prev` of the next accept: SHA-256 of this accept's line without its newline."""
    return hashlib.sha256(line).hexdigest()


def new_acceptance_id() -> str:
    return "acc_" + secrets.token_hex(8)


def _int(fields: dict[str, Any], key: str, low: int, high: int) -> int:
    value = fields[key]
    if type(value) is not int or not low <= value <= high:  # bool is not an amount
        raise LineInvalid(f"{key} must be an integer in {low}..{high}")
    return value


def _text(fields: dict[str, Any], key: str, pattern: re.Pattern[str], chars_max: int) -> str:
    value = fields[key]
    if not isinstance(value, str) or len(value) > chars_max or not pattern.fullmatch(value):
        raise LineInvalid(f"{key} is not of its form")
    return value


def checked_order(fields: dict[str, Any]) -> str:
    value = fields["order"]
    if not isinstance(value, str) or not 0 < len(value) <= ORDER_CHARS_MAX:
        raise LineInvalid(f"order must be 1..{ORDER_CHARS_MAX} characters")
    if not value.isprintable():
        raise LineInvalid("order must be printable")
    return value


def parse(line: bytes) -> Acceptance | Synced:
    """One line (without its newline) as a record; `LineInvalid` unless canonical and in range."""
    if len(line) > RECORD_BYTES_MAX:
        raise LineInvalid(f"longer than {RECORD_BYTES_MAX} bytes")
    try:
        fields = json.loads(line)
    except (UnicodeDecodeError, ValueError) as error:
        raise LineInvalid("not JSON") from error
    if not isinstance(fields, dict) or encode(fields) != line:
        raise LineInvalid("not a canonical JSON object")
    kind, keys = fields.get("kind"), frozenset(fields)
    if fields.get("v") != FORMAT or (kind, keys) not in (
        ("accept", _ACCEPT_KEYS),
        ("synced", _SYNCED_KEYS),
    ):
        raise LineInvalid("not an accept or synced record of format 1")
    if kind == "synced":
        result = fields["result"]
        if result not in RESULTS:
            raise LineInvalid("result unknown")
        paid_minor = _int(fields, "paid_minor", 0, U32_MAX)
        loss_minor = _int(fields, "loss_minor", 0, U32_MAX)
        return Synced(_text(fields, "id", _ID, 20), result, paid_minor, loss_minor)
    return Acceptance(
        id=_text(fields, "id", _ID, 20), seq=_int(fields, "seq", 1, 2**53),
        prev=_text(fields, "prev", _HASH, 64), order=checked_order(fields),
        cert=_text(fields, "cert", _CERT, 32), counter=_int(fields, "counter", 0, 254),
        code=_text(fields, "code", _CODE, CODE_CHARS_MAX),
        amount_minor=_int(fields, "amount_minor", 1, U32_MAX),
        currency=_text(fields, "currency", _CURRENCY, 3), at_s=_int(fields, "at_s", 0, 2**53),
    )  # fmt: skip
