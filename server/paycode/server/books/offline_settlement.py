"""Settling what tills accepted offline (docs/offline.md §6.1, §6.3).

Each forwarded acceptance settles once, in its own transaction, in arrival order, against
escrow as it stands: the merchant is paid what the allowance's escrow still holds, and what it
cannot pay is booked as the merchant's offline loss (from `system:offline-shortfall`), never
taken from anyone's own account. Races are decided by the UNIQUE constraints of
`offline_acceptances` (one claim per merchant, certificate and counter; one row per till and
record id) and by the locks on the till's chain row and on the escrow account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.books import ledger
from paycode.server.books.escrow import locked_escrow
from paycode.server.books.offline_chain import (
    AcceptanceRecord,
    advance,
    check_follows,
    line_hash,
    lock_chain,
)
from paycode.server.books.offline_lock import lock_allowance_holder, overspent
from paycode.server.books.offline_verify import Invalid, Verified, verify_code
from paycode.server.charge.payment_rows import add_succeeded
from paycode.server.charge.planning import payment_json
from paycode.server.database.models import SYSTEM, Account, Merchant, Payment, new_id
from paycode.server.database.offline_models import (
    LOSS,
    LOSS_KIND,
    SHORTFALL_OWNER,
    OfflineAcceptance,
)
from paycode.server.notifications import events
from paycode.server.operations.observability import annotate
from paycode.server.safety.offline_keys import OfflineKeys
from paycode.server.safety.offline_settings import OfflineSettings
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.errors import ApiError, CodeMalformed
from paycode.shared.versions import v4_offline

CHARGE = "charge"
CODE_VERSION = "v4"


@dataclass(frozen=True, slots=True)
class Settled:
    """How one acceptance settled: what the till appends as its `synced` record."""

    id: str
    result: str
    paid_minor: int
    loss_minor: int
    payment_id: str | None
    replayed: bool = False
    """A retry of a record settled before: nothing moved this time."""

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "result": self.result,
            "paid_minor": self.paid_minor,
            "loss_minor": self.loss_minor,
            "payment_id": self.payment_id,
        }


def _settled(row: OfflineAcceptance, *, replayed: bool = False) -> Settled:
    return Settled(row.id, row.result, row.paid_minor, row.loss_minor, row.payment_id, replayed)


def _code_key(code_text: str) -> tuple[str | None, int | None]:
    """(cert_id hex, counter) of a code, (None, None) when it is no v4 code."""
    try:
        code = v4_offline.parse(code_text)
    except CodeMalformed:
        return None, None
    return code.certificate.fields.cert_id.hex(), code.payment.counter


def stored_result(row: OfflineAcceptance, record: AcceptanceRecord) -> Settled:
    """A retry's answer (§6.1 step 2), if it is the record this id was first settled for."""
    stored = (row.seq, row.amount_minor, row.currency, row.merchant_order_id, row.at_s)
    sent = (
        record.seq,
        record.amount_minor,
        record.currency,
        record.merchant_order_id,
        float(record.at_s),
    )
    same = stored == sent and (row.cert_id, row.counter) == _code_key(record.code)
    if not same:
        raise ApiError(
            ErrorCode.IDEMPOTENCY_CONFLICT,
            f"acceptance {record.id} was forwarded before with other fields",
        )
    return _settled(row, replayed=True)


def book_loss(
    session: Session, *, merchant_id: str, currency: str, amount_minor: int, now_s: float
) -> str:
    """What no escrow pays: from the shortfall account (may go below zero) to the merchant's
    loss account, so the loss is named and never mixed with money it can spend."""
    shortfall = ledger.open_account(session, SYSTEM, SHORTFALL_OWNER, currency)
    loss = ledger.open_account(session, LOSS, merchant_id, currency)
    return ledger.transfer(
        session,
        kind=LOSS_KIND,
        debit=shortfall,
        credit=loss,
        amount_minor=amount_minor,
        now_s=now_s,
    )


def pay_from_escrow(
    session: Session,
    verified: Verified,
    escrow: Account,
    *,
    payment_id: str,
    amount_minor: int,
    merchant_id: str,
    terminal_id: str,
    merchant_order_id: str | None,
    now_s: float,
) -> Payment:
    """A succeeded v4 payment of `amount_minor` from the (locked) escrow to the merchant.

    Raises ApiError(duplicate_order), moving nothing, when a payment of this order succeeded
    meanwhile (the UNIQUE index decides what order_paid only read)."""
    allowance = verified.allowance
    payment = Payment(
        id=payment_id,
        merchant_id=merchant_id,
        terminal_id=terminal_id,
        user_id=allowance.user_id,
        device_id=allowance.device_id,
        amount_minor=amount_minor,
        currency=allowance.currency,
        refunded_minor=0,
        status=PaymentStatus.SUCCEEDED,
        merchant_order_id=merchant_order_id,
        code_version=CODE_VERSION,
        created_at_s=now_s,
        allowance_id=allowance.id,
    )
    add_succeeded(session, payment)
    merchant_account = ledger.open_account(session, "merchant", merchant_id, allowance.currency)
    ledger.transfer(
        session,
        kind=CHARGE,
        debit=escrow,
        credit=merchant_account,
        amount_minor=amount_minor,
        now_s=now_s,
        payment_id=payment.id,
    )
    events.record(session, payment_json(payment), events.SUCCEEDED, now_s)
    return payment


def order_paid(session: Session, merchant_id: str, merchant_order_id: str | None) -> bool:
    """§6.1 step 8: the merchant already has a succeeded payment for this order."""
    if merchant_order_id is None:
        return False
    found = session.scalar(
        select(func.count()).where(
            Payment.merchant_id == merchant_id,
            Payment.merchant_order_id == merchant_order_id,
            Payment.status == PaymentStatus.SUCCEEDED,
        )
    )
    return bool(found)


def _row(
    terminal_id: str, merchant_id: str, record: AcceptanceRecord, now_s: float, **fields: Any
) -> OfflineAcceptance:
    return OfflineAcceptance(
        terminal_id=terminal_id,
        id=record.id,
        merchant_id=merchant_id,
        seq=record.seq,
        amount_minor=record.amount_minor,
        currency=record.currency,
        merchant_order_id=record.merchant_order_id,
        at_s=float(record.at_s),
        arrived_at_s=now_s,
        **fields,
    )


def _refused_invalid(
    session: Session, row: OfflineAcceptance, merchant_id: str, now_s: float
) -> Settled:
    """A till that accepted what it must not have (broken or dishonest): the merchant bears it,
    booked like any loss so a loss account is always the sum of its acceptances' losses."""
    row.result, row.paid_minor, row.loss_minor = "refused_invalid", 0, row.amount_minor
    row.loss_transaction_id = book_loss(
        session,
        merchant_id=merchant_id,
        currency=row.currency,
        amount_minor=row.amount_minor,
        now_s=now_s,
    )
    session.add(row)
    session.flush()
    return _settled(row)


def _claimed(session: Session, row: OfflineAcceptance) -> bool:
    """Insert the claiming row; False when another till of this merchant claimed the code."""
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True


def settle_acceptance(
    session: Session,
    *,
    terminal_id: str,
    merchant: Merchant,
    record: AcceptanceRecord,
    keys: OfflineKeys,
    settings: OfflineSettings,
    now_s: float,
) -> Settled:
    """§6.1 steps 2 to 10 for one forwarded record, in the caller's transaction.

    Raises ChainOutOfOrder / ApiError(offline_chain_broken) when the record does not follow
    the till's last (nothing stored), idempotency_conflict for a known id with other fields."""
    chain = lock_chain(session, terminal_id)
    stored = session.get(OfflineAcceptance, (terminal_id, record.id))
    if stored is not None:
        return stored_result(stored, record)
    check_follows(chain, record)
    try:
        code = v4_offline.parse(record.code)
    except CodeMalformed:
        advance(chain, record, None)
        row = _row(terminal_id, merchant.id, record, now_s)
        return _refused_invalid(session, row, merchant.id, now_s)
    cert_id = code.certificate.fields.cert_id.hex()
    advance(chain, record, line_hash(record, cert_id, code.payment.counter))
    row = _row(
        terminal_id, merchant.id, record, now_s, cert_id=cert_id, counter=code.payment.counter
    )
    verified = verify_code(
        session,
        code,
        amount_minor=record.amount_minor,
        currency=record.currency,
        merchant=merchant,
        terminal_id=terminal_id,
        keys=keys,
        settings=settings,
        at_s=record.at_s,
    )
    if isinstance(verified, Invalid):
        annotate(offline_refused=verified.reason)
        return _refused_invalid(session, row, merchant.id, now_s)
    row.allowance_id = verified.allowance.id
    if order_paid(session, merchant.id, record.merchant_order_id):
        row.result, row.paid_minor, row.loss_minor = "duplicate_order", 0, 0
        session.add(row)
        session.flush()
        return _settled(row)
    return _claim_and_pay(session, row, verified, now_s)


def _claim_and_pay(
    session: Session, row: OfflineAcceptance, verified: Verified, now_s: float
) -> Settled:
    """Steps 6, 7, 9 and 10."""
    row.result, row.paid_minor, row.loss_minor = "unpaid", 0, row.amount_minor
    if not _claimed(session, row):
        duplicate = OfflineAcceptance(
            **{column: getattr(row, column) for column in _COLUMNS},
        )
        duplicate.result, duplicate.paid_minor, duplicate.loss_minor = "duplicate", 0, 0
        session.add(duplicate)
        session.flush()
        return _settled(duplicate)
    allowance, certificate = verified.allowance, verified.certificate
    late = now_s >= allowance.returns_at_s
    escrow = locked_escrow(session, allowance)
    # A code counted after the hand-back was never made by the wallet that handed it back:
    # escrow keeps only what the codes it declared may claim.
    handed_back = certificate.returned_counter is not None
    declared = not handed_back or verified.counter < (certificate.returned_counter or 0)
    paid_minor = min(row.amount_minor, escrow.balance_minor) if declared else 0
    if paid_minor > 0:
        try:
            payment = pay_from_escrow(
                session,
                verified,
                escrow,
                payment_id=new_id("pay"),
                amount_minor=paid_minor,
                merchant_id=row.merchant_id,
                terminal_id=row.terminal_id,
                merchant_order_id=row.merchant_order_id,
                now_s=now_s,
            )
        except ApiError as error:
            if error.code != ErrorCode.DUPLICATE_ORDER:
                raise
            # The order was paid online meanwhile: as step 8, nothing paid and no loss.
            row.result, row.paid_minor, row.loss_minor = "duplicate_order", 0, 0
            session.flush()
            return _settled(row)
        row.payment_id = payment.id
    short_minor = row.amount_minor - paid_minor
    if short_minor > 0:
        row.loss_transaction_id = book_loss(
            session,
            merchant_id=row.merchant_id,
            currency=row.currency,
            amount_minor=short_minor,
            now_s=now_s,
        )
    row.paid_minor, row.loss_minor = paid_minor, short_minor
    if late:
        row.result = "late"
    else:
        row.result = "paid" if short_minor == 0 else "paid_short" if paid_minor else "unpaid"
    session.flush()
    evidence = overspent(
        session,
        merchant_id=row.merchant_id,
        certificate=certificate,
        counter=verified.counter,
        short_minor=0 if late else short_minor,
    )
    if evidence is not None:
        annotate(offline_overspent=evidence, allowance_id=allowance.id)
        lock_allowance_holder(session, allowance, now_s)
    return _settled(row)


_COLUMNS = (
    "terminal_id",
    "id",
    "merchant_id",
    "seq",
    "allowance_id",
    "cert_id",
    "counter",
    "amount_minor",
    "currency",
    "merchant_order_id",
    "at_s",
    "arrived_at_s",
)
