"""The charge as SQL statements, one transaction: how SQLite runs it, and the reference the
PostgreSQL function (paycode.server.charge.postgres) is held to. tests/charge/test_differential.py
drives both with the same operations and requires the same outcomes and the same rows, so a
rule changed in one and not the other fails there, not in production.

SQLite's BEGIN IMMEDIATE holds the database's write lock from the first statement, so nothing
read here can change before it is written: the steps need no row locks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from paycode.server.charge.planning import RECORDED_FAILURES, ChargePlan
from paycode.server.charge.result import NONCE_REPLAYED, STORED, TERMINAL_REVOKED, ChargeResult
from paycode.server.safety.guard import GuardSettings, blocked_until_s, count_failure
from paycode.server.safety.limits import maxima, needs_confirmation, used_on
from paycode.shared.codes import ErrorCode, PaymentStatus


def run_charge(connection: Connection, plan: ChargePlan, guard: GuardSettings) -> ChargeResult:
    attempt = plan.attempt
    revoked = connection.execute(
        text("SELECT revoked_at_s FROM terminals WHERE id = :id"),
        {"id": attempt.terminal.terminal_id},
    ).first()
    if revoked is None or revoked[0] is not None:
        return ChargeResult(TERMINAL_REVOKED)
    scopes = plan.guard_scopes(guard)
    until_s = blocked_until_s(connection, scopes, attempt.now_s)
    if until_s is not None:
        return ChargeResult(ErrorCode.RATE_LIMITED, body=repr(until_s))
    if not _insert_new(
        connection,
        "INSERT INTO request_nonces (scope, nonce, expires_at_s) VALUES (:scope, :nonce, :exp)",
        {"scope": attempt.scope, "nonce": attempt.nonce, "exp": attempt.nonce_expires_at_s},
    ):
        return ChargeResult(NONCE_REPLAYED)
    key = {"scope": attempt.scope, "key": attempt.idempotency_key}
    if not _insert_new(
        connection,
        "INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response_body,"
        " created_at_s) VALUES (:scope, :key, :hash, 0, '{}', :now)",
        key | {"hash": attempt.request_hash, "now": attempt.now_s},
    ):
        stored = connection.execute(
            text(
                "SELECT status_code, response_body, request_hash FROM idempotency_keys"
                " WHERE scope = :scope AND key = :key"
            ),
            key,
        ).one()
        return ChargeResult(STORED, stored[0], stored[1], stored[2])
    if plan.counts_as_guess:
        count_failure(connection, scopes, guard, attempt.now_s)
    if plan.burn is not None:
        _burn(connection, plan)
    outcome = plan.rejection or _claim_and_pay(connection, plan)
    if plan.rejection is None:
        _notify(connection, plan, outcome)
    status, reply = plan.replies[outcome]
    body = json.dumps(reply)  # as reply_texts renders it, for this outcome only
    connection.execute(
        text(
            "UPDATE idempotency_keys SET status_code = :status, response_body = :body"
            " WHERE scope = :scope AND key = :key"
        ),
        key | {"status": status, "body": body},
    )
    return ChargeResult(outcome, status, body, attempt.request_hash)


def _notify(connection: Connection, plan: ChargePlan, outcome: str) -> None:
    """The outbox row for this outcome, when the merchant takes notifications and a payment
    was recorded (succeeded, pending or failed); as paycode_charge does."""
    notice = (plan.notices or {}).get(outcome)
    if notice is None:
        return
    event_type, payload = notice
    connection.execute(
        text(
            "INSERT INTO notification_outbox (event_id, merchant_id, payment_id, event_type,"
            " payload, created_at_s, attempts, next_attempt_at_s)"
            " VALUES (:event, :merchant, :payment, :type, :payload, :now, 0, :now)"
        ),
        {
            "event": plan.event_id,
            "merchant": plan.attempt.terminal.merchant_id,
            "payment": plan.payment_id,
            "type": event_type,
            "payload": payload,
            "now": plan.attempt.now_s,
        },
    )


def _insert_new(connection: Connection, insert_sql: str, params: dict[str, Any]) -> bool:
    """Insert unless the primary key exists; whether this call inserted it."""
    result = connection.execute(text(insert_sql + " ON CONFLICT DO NOTHING"), params)
    return result.rowcount == 1


def _burn(connection: Connection, plan: ChargePlan) -> None:
    """Claim a genuine code refused for time, so it can never pay later (a claim that exists
    already, of a code that paid, stays as it is)."""
    burn = plan.burn
    assert burn is not None
    _insert_new(
        connection,
        "INSERT INTO claims (claim_key, device_id, expires_at_s) VALUES (:key, :device, :exp)",
        {"key": burn.claim_key, "device": burn.device_id, "exp": plan.burn_expires_at_s},
    )


@dataclass(frozen=True, slots=True)
class _Payer:
    account_id: int
    day_count: int
    """Password-free payments so far today (before this one)."""
    day_minor: int


@dataclass(frozen=True, slots=True)
class _Recorded:
    """Whose payment this is: the device it names, and the server-held issuer whose code paid
    (docs/spec.md §14), None for a code the phone made itself."""

    device_id: str
    online_issuer_id: str | None


def _refused_before_claim(
    connection: Connection, plan: ChargePlan, device_id: str
) -> str | _Recorded:
    """What stops the charge before the code is claimed (the device, or the order), or whom
    the payment is recorded for."""
    state = connection.execute(
        text("SELECT revoked_at_s, locked_at_s, online_for_device_id FROM devices WHERE id = :id"),
        {"id": device_id},
    ).first()
    if state is None or state[0] is not None:
        return ErrorCode.DEVICE_REVOKED
    if state[1] is not None:
        return ErrorCode.DEVICE_LOCKED
    # A cashier's reused order id must not cost the customer the code. The write lock is
    # held, so no payment of this order can appear before ours is inserted.
    if _order_paid(connection, plan):
        return ErrorCode.DUPLICATE_ORDER
    if state[2] is not None:
        return _Recorded(state[2], device_id)
    return _Recorded(device_id, None)


def _claim_and_pay(connection: Connection, plan: ChargePlan) -> str:
    accepted, device = plan.accepted, plan.device
    assert accepted is not None and device is not None
    device_id = accepted.device.device_id
    recorded = _refused_before_claim(connection, plan, device_id)
    if isinstance(recorded, str):
        return recorded
    if not _insert_new(
        connection,
        "INSERT INTO claims (claim_key, device_id, expires_at_s) VALUES (:key, :device, :exp)",
        {"key": accepted.claim_key.decode(), "device": device_id, "exp": plan.claim_expires_at_s},
    ):
        return ErrorCode.CODE_REPLAYED
    connection.execute(
        text(
            "UPDATE devices SET drift_steps = :drift WHERE id = :id AND drift_steps <> :drift"
            " AND drift_steps - 1 <> :drift"  # one step late is latency (learned_drift)
        ),
        {"drift": plan.observed_drift_steps, "id": device_id},
    )
    outcome, payer, payee = _payable(connection, plan, device.user_id)
    if outcome in (PaymentStatus.SUCCEEDED, ErrorCode.CONFIRMATION_REQUIRED):
        inserted = _insert_payment(connection, plan, device.user_id, outcome, recorded)
        assert inserted, "the order was checked before the claim, under the write lock"
        if outcome == ErrorCode.CONFIRMATION_REQUIRED:
            return outcome
    if outcome != PaymentStatus.SUCCEEDED:
        assert outcome in RECORDED_FAILURES
        _insert_payment(connection, plan, device.user_id, outcome, recorded)
        return outcome
    assert payer is not None
    _move(connection, plan, payer, payee)
    return PaymentStatus.SUCCEEDED


def _payable(
    connection: Connection, plan: ChargePlan, user_id: str
) -> tuple[str, _Payer | None, int]:
    """(SUCCEEDED, CONFIRMATION_REQUIRED or a failure; the payer; the payee account). SQLite's
    BEGIN IMMEDIATE already holds the write lock, so nothing read here can change before the
    debit: the balance, and today's password-free count and amount
    (paycode.server.safety.limits)."""
    limits = plan.limits
    assert limits is not None
    merchant_id = plan.attempt.terminal.merchant_id
    payee = connection.execute(
        text(
            "SELECT id FROM accounts WHERE owner_kind = 'merchant' AND owner_id = :owner"
            " AND currency = :currency"
        ),
        {"owner": merchant_id, "currency": plan.currency},
    ).scalar_one()
    row = connection.execute(
        text(
            "SELECT id, balance_minor, pinless_payment_max_minor, pinless_daily_max_minor,"
            " pinless_daily_count_max, pinless_day, pinless_day_count, pinless_day_minor"
            " FROM accounts WHERE owner_kind = 'user' AND owner_id = :owner"
            " AND currency = :currency"
        ),
        {"owner": user_id, "currency": plan.currency},
    ).first()
    if row is None:
        return ErrorCode.CURRENCY_MISMATCH, None, payee
    used = used_on(plan.day, (row.pinless_day, row.pinless_day_count, row.pinless_day_minor))
    payer = _Payer(row.id, *used)
    amount_minor = plan.amount_minor
    if amount_minor > limits.code_payment_max_minor:
        return ErrorCode.LIMIT_EXCEEDED, payer, payee
    if row.balance_minor < amount_minor:
        return ErrorCode.INSUFFICIENT_FUNDS, payer, payee
    own = (row.pinless_payment_max_minor, row.pinless_daily_max_minor, row.pinless_daily_count_max)
    if needs_confirmation(amount_minor, maxima(limits, own), used):
        return ErrorCode.CONFIRMATION_REQUIRED, payer, payee
    return PaymentStatus.SUCCEEDED, payer, payee


def _insert_payment(
    connection: Connection, plan: ChargePlan, user_id: str, outcome: str, recorded: _Recorded
) -> bool:
    """Insert the payment as `outcome` says: succeeded, pending or failed; whether it was (a
    successful one yields to an earlier success of the same order)."""
    assert plan.accepted is not None
    sql = (
        "INSERT INTO payments (id, merchant_id, terminal_id, user_id, device_id, amount_minor,"
        " currency, refunded_minor, status, failure_code, merchant_order_id, code_version,"
        " created_at_s, confirm_by_s, online_issuer_id) VALUES (:id, :merchant, :terminal, :user,"
        " :device, :amount, :currency, 0, :status, :failure, :order_id, :version, :now,"
        " :confirm_by, :issuer)"
    )
    if outcome == PaymentStatus.SUCCEEDED:
        sql += " ON CONFLICT (merchant_id, merchant_order_id) WHERE status = 'succeeded' DO NOTHING"
    statuses: dict[str, PaymentStatus] = {
        PaymentStatus.SUCCEEDED: PaymentStatus.SUCCEEDED,
        ErrorCode.CONFIRMATION_REQUIRED: PaymentStatus.PENDING_CONFIRMATION,
    }
    status = statuses.get(outcome, PaymentStatus.FAILED)
    attempt = plan.attempt
    result = connection.execute(
        text(sql),
        {
            "id": plan.payment_id,
            "merchant": attempt.terminal.merchant_id,
            "terminal": attempt.terminal.terminal_id,
            "user": user_id,
            "device": recorded.device_id,
            "issuer": recorded.online_issuer_id,
            "amount": plan.amount_minor,
            "currency": plan.currency,
            "status": status,
            "failure": None
            if status in (PaymentStatus.SUCCEEDED, PaymentStatus.PENDING_CONFIRMATION)
            else outcome,
            "order_id": plan.order_id,
            "version": plan.accepted.version,
            "now": attempt.now_s,
            "confirm_by": plan.confirm_by_s
            if status == PaymentStatus.PENDING_CONFIRMATION
            else None,
        },
    )
    return result.rowcount == 1


def _order_paid(connection: Connection, plan: ChargePlan) -> bool:
    """Whether the order already has a successful payment: then the code is not claimed (a
    pending one would be confirmed for nothing; confirming re-checks in any case)."""
    if plan.order_id is None:
        return False
    found = connection.execute(
        text(
            "SELECT 1 FROM payments WHERE merchant_id = :merchant AND merchant_order_id = :order"
            " AND status = 'succeeded'"
        ),
        {"merchant": plan.attempt.terminal.merchant_id, "order": plan.order_id},
    ).first()
    return found is not None


def _move(connection: Connection, plan: ChargePlan, payer: _Payer, payee: int) -> None:
    amount_minor, txn = plan.amount_minor, plan.transaction_id
    debited = connection.execute(
        text(
            "UPDATE accounts SET balance_minor = balance_minor - :amount, pinless_day = :day,"
            " pinless_day_count = :count, pinless_day_minor = :spent"
            " WHERE id = :id AND balance_minor >= :amount"
        ),
        {
            "amount": amount_minor,
            "id": payer.account_id,
            "day": plan.day,
            "count": payer.day_count + 1,
            "spent": payer.day_minor + amount_minor,
        },
    )
    assert debited.rowcount == 1, "the balance was checked under the write lock"
    connection.execute(
        text("UPDATE accounts SET balance_minor = balance_minor + :amount WHERE id = :id"),
        {"amount": amount_minor, "id": payee},
    )
    connection.execute(
        text(
            "INSERT INTO ledger_transactions (id, kind, payment_id, created_at_s)"
            " VALUES (:id, 'charge', :payment, :now)"
        ),
        {"id": plan.transaction_id, "payment": plan.payment_id, "now": plan.attempt.now_s},
    )
    connection.execute(
        text(
            "INSERT INTO ledger_entries (transaction_id, account_id, amount_minor, currency)"
            " VALUES (:txn, :account, :amount, :currency)"
        ),
        [
            {
                "txn": txn,
                "account": payer.account_id,
                "amount": -amount_minor,
                "currency": plan.currency,
            },
            {"txn": txn, "account": payee, "amount": amount_minor, "currency": plan.currency},
        ],
    )
