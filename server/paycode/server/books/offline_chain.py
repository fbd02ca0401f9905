"""A till's acceptance record as forwarded, and the hash chain it extends (docs/offline.md §4.3,
§5, §6.1 step 3).

The till writes each acceptance as one canonical JSON line whose `prev` is the SHA-256 of the
previous acceptance's line; the server rebuilds that line from what sync sends (the
certificate id and counter come from the code itself) and keeps, per till, the last seq and
hash. A record that does not follow is answered 409 and not stored: the till sends the one
that does first. Pure functions here, apart from `lock_chain` (the till's row, locked).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.database.offline_models import OfflineTerminal
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError

RECORD_FORMAT = 1
GENESIS_HASH = "0" * 64
"""`prev` of a till's first record."""
U32_MAX = 2**32 - 1
SEQ_MAX = 2**53
ORDER_CHARS_MAX = 64
CODE_CHARS_MAX = 512
FIELDS = frozenset(
    {"id", "seq", "prev", "code", "amount_minor", "currency", "merchant_order_id", "at_s"}
)

_ID = re.compile(r"acc_[0-9a-f]{16}", re.ASCII)
_HASH = re.compile(r"[0-9a-f]{64}", re.ASCII)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
_CODE = re.compile(r"[\x21-\x7e]+", re.ASCII)
"""As the till's log reads them (merchant_pos offline_records): a field the log could not hold
could not have been acknowledged."""


@dataclass(frozen=True, slots=True)
class AcceptanceRecord:
    """One acceptance as a till forwards it (`POST /v1/offline/acceptances`)."""

    id: str
    seq: int
    prev: str
    code: str
    amount_minor: int
    currency: str
    merchant_order_id: str
    at_s: int


class ChainOutOfOrder(ApiError):
    """The record is not the till's next one: `expected_seq` is."""

    def __init__(self, expected_seq: int, detail: str) -> None:
        super().__init__(ErrorCode.OFFLINE_OUT_OF_ORDER, detail)
        self.expected_seq = expected_seq


def _invalid(detail: str) -> ApiError:
    return ApiError(ErrorCode.INVALID_REQUEST, detail)


def _integer(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body[name]
    if type(value) is not int or not low <= value <= high:  # bool is not a number here
        raise _invalid(f"'{name}' must be an integer within {low}..{high}")
    return value


def _text(body: dict[str, Any], name: str, pattern: re.Pattern[str], chars_max: int) -> str:
    value = body[name]
    if not isinstance(value, str) or len(value) > chars_max or not pattern.fullmatch(value):
        raise _invalid(f"'{name}' is not of its form")
    return value


def parse_record(body: dict[str, Any]) -> AcceptanceRecord:
    """The record in a request body, exactly these members; invalid_request otherwise."""
    if set(body) != FIELDS:
        missing, extra = sorted(FIELDS - set(body)), sorted(set(body) - FIELDS)
        raise _invalid(f"the body has exactly {sorted(FIELDS)} (missing {missing}, extra {extra})")
    order = body["merchant_order_id"]
    if not isinstance(order, str) or not 0 < len(order) <= ORDER_CHARS_MAX:
        raise _invalid(f"'merchant_order_id' must be 1..{ORDER_CHARS_MAX} characters")
    if not order.isprintable():
        raise _invalid("'merchant_order_id' must be printable")
    return AcceptanceRecord(
        id=_text(body, "id", _ID, 20),
        seq=_integer(body, "seq", 1, SEQ_MAX),
        prev=_text(body, "prev", _HASH, 64),
        code=_text(body, "code", _CODE, CODE_CHARS_MAX),
        amount_minor=_integer(body, "amount_minor", 1, U32_MAX),
        currency=_text(body, "currency", _CURRENCY, 3),
        merchant_order_id=order,
        at_s=_integer(body, "at_s", 0, SEQ_MAX),
    )


def line_hash(record: AcceptanceRecord, cert_id_hex: str, counter: int) -> str:
    """SHA-256 of the till's `accept` line for this record: the next record's `prev`."""
    fields = {
        "amount_minor": record.amount_minor,
        "at_s": record.at_s,
        "cert": cert_id_hex,
        "code": record.code,
        "counter": counter,
        "currency": record.currency,
        "id": record.id,
        "kind": "accept",
        "order": record.merchant_order_id,
        "prev": record.prev,
        "seq": record.seq,
        "v": RECORD_FORMAT,
    }
    line = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
    return hashlib.sha256(line).hexdigest()


def lock_chain(session: Session, terminal_id: str) -> OfflineTerminal:
    """The till's chain row, locked for this transaction (made at its first record): two
    requests of one till settle one after the other, each seeing the other's result."""
    statement = (
        select(OfflineTerminal)
        .where(OfflineTerminal.terminal_id == terminal_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    row = session.scalars(statement).one_or_none()
    if row is not None:
        return row
    try:
        with session.begin_nested():
            session.add(
                OfflineTerminal(terminal_id=terminal_id, last_seq=0, last_hash=GENESIS_HASH)
            )
    except IntegrityError:
        pass  # another request of this till made it first; its lock is waited for below
    return session.scalars(statement).one()


def check_follows(chain: OfflineTerminal, record: AcceptanceRecord) -> None:
    """§6.1 step 3. A NULL `last_hash` (a lost log the operator recorded) takes any `prev`."""
    expected_seq = chain.last_seq + 1
    if record.seq != expected_seq:
        raise ChainOutOfOrder(
            expected_seq, f"this till's next record is seq {expected_seq}, not {record.seq}"
        )
    if chain.last_hash is not None and record.prev != chain.last_hash:
        raise ApiError(
            ErrorCode.OFFLINE_CHAIN_BROKEN,
            f"seq {record.seq}'s prev is not the hash of seq {chain.last_seq}'s record",
        )


def advance(chain: OfflineTerminal, record: AcceptanceRecord, hash_hex: str | None) -> None:
    """The record is the till's last; None: its line could not be rebuilt (a code that is no
    v4 code), so the next `prev` is taken as it comes, as after a recorded gap."""
    chain.last_seq = record.seq
    chain.last_hash = hash_hex


def record_gap(session: Session, terminal_id: str, *, from_seq: int, to_seq: int) -> int:
    """`terminals offline-gap`: the records from_seq..to_seq are lost (a dead disk); the till's
    next record is to_seq + 1, with any `prev`. Their sales are the merchant's loss. Refused
    unless from_seq is the till's next seq. Returns the next seq expected."""
    if not 1 <= from_seq <= to_seq <= SEQ_MAX:
        raise _invalid("the gap is 1 <= from-seq <= to-seq")
    chain = lock_chain(session, terminal_id)
    if from_seq != chain.last_seq + 1:
        raise ApiError(
            ErrorCode.INVALID_ARGUMENT,
            f"this till's next record is seq {chain.last_seq + 1}: a gap starts there",
        )
    chain.last_seq = to_seq
    chain.last_hash = None
    return to_seq + 1
