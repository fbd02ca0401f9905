"""A charge, planned in Python and then carried out as one database transaction.

    plan:    body fields -> currency -> verify (shared.verify)           no I/O but cached reads
    execute: nonce -> idempotency -> device live -> claim -> drift -> money -> payment -> reply

Planning does the CPU work (parsing, signatures, the code's MAC) and renders every reply the
transaction can end with; server.charge_store then runs the transaction in one round trip on
PostgreSQL. The claim is made as soon as the code proves genuine and stays even when the
payment then fails (insufficient funds, currency), so a code is never spendable twice, across
workers and hosts. Verification failures claim nothing and move nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from paycode.server.charge.verification import Burn, NamedHandle, verify_charge_code
from paycode.server.database.directory import CachedDevice, Directory, TerminalCredential
from paycode.server.database.models import Payment, new_id, time_ordered_id
from paycode.server.http.problems import problem_body, problem_reply
from paycode.server.http.request_fields import money_fields, string_field
from paycode.server.notifications import events
from paycode.server.safety.guard import COUNTED_FAILURES, GuardScopes, GuardSettings, with_handles
from paycode.server.safety.limits import DefaultLimits, LimitSettings
from paycode.shared.binding import charging_point_bindings
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.errors import ApiError
from paycode.shared.money import Money, format_amount
from paycode.shared.points import POINTS_ASSET
from paycode.shared.timestamps import iso_time
from paycode.shared.timestep import STEP_SECONDS
from paycode.shared.versions.base import (
    Accepted,
    VerifierKeys,
    VersionStatus,
    Window,
)
from paycode.shared.versions.registry import DEFAULT_STATUS

DRIFT_STEPS_MAX = 10
"""A device clock followed up to 5 minutes off; further off, its codes expire (re-sync)."""
CLAIM_STEPS_KEPT = Window().steps_ahead + DRIFT_STEPS_MAX + 2
"""A claim outlives every moment its code could still verify; then the worker purges it."""
CODE_CHARS_MAX = 512
ISSUED_ONLINE = "issued_online"
"""Present, and true, on a payment by a code the server issued online (docs/spec.md §14)."""
ORDER_ID_CHARS_MAX = 64
DEFAULT_LIMITS = LimitSettings()

FAILURE_DETAILS: Mapping[str, str] = {
    ErrorCode.CODE_REPLAYED: "this code was already used; ask for a fresh one",
    ErrorCode.DEVICE_REVOKED: "device was revoked",
    ErrorCode.DEVICE_LOCKED: "this phone made too many bad codes; the customer opens the wallet "
    "online "
    "to unlock it",
    ErrorCode.INSUFFICIENT_FUNDS: "the balance does not cover the amount",
    ErrorCode.CURRENCY_MISMATCH: "the customer has no account in this currency",
    ErrorCode.DUPLICATE_ORDER: "this merchant_order_id already has a successful payment; the "
    "code was not used and pays with another order id",
    ErrorCode.LIMIT_EXCEEDED: "the amount is above what a payment code may pay; use another method",
}
"""Outcomes decided inside the transaction, after planning."""
RECORDED_FAILURES = frozenset(
    {ErrorCode.INSUFFICIENT_FUNDS, ErrorCode.CURRENCY_MISMATCH, ErrorCode.LIMIT_EXCEEDED}
)
"""Outcomes that leave a failed payment behind (the code was claimed; the till can query it).
Not duplicate_order: the order is checked before the claim, so a reused order id costs the
customer nothing and records nothing; the same code then pays with a fresh order id."""
FAILURE_REPLIES: Mapping[str, tuple[int, dict[str, Any]]] = {
    outcome: problem_reply(outcome, detail) for outcome, detail in FAILURE_DETAILS.items()
}
"""The failures' replies, rendered once: every charge's are these, a recorded failure's with its
payment_id added last. Shared by every plan, so never changed in place (senders copy with |)."""
_FAILURE_TEXTS = {outcome: json.dumps(body) for outcome, (_, body) in FAILURE_REPLIES.items()}


@dataclass(frozen=True, slots=True)
class ChargeAttempt:
    """Who asked, and the request's replay and idempotency identity."""

    terminal: TerminalCredential
    nonce: str
    nonce_expires_at_s: float
    idempotency_key: str
    request_hash: str
    now_s: float
    guard_scopes: GuardScopes

    @property
    def scope(self) -> str:
        return f"terminal:{self.terminal.terminal_id}"


@dataclass(frozen=True, slots=True)
class ChargePlan:
    """Everything the transaction needs. `rejection` set: store that reply, move nothing."""

    attempt: ChargeAttempt
    replies: Mapping[str, tuple[int, dict[str, Any]]]
    rejection: str | None = None
    accepted: Accepted | None = None
    device: CachedDevice | None = None
    payment_id: str = ""
    transaction_id: str = ""
    amount_minor: int = 0
    currency: str = ""
    order_id: str | None = None
    limits: DefaultLimits | None = None
    day: int = 0
    confirm_by_s: float = 0.0
    named_handles: tuple[NamedHandle, ...] = ()
    """The handles a refused code's readings named, enrolled or not (CodeRefused), counted by
    the guard at this merchant."""
    burn: Burn | None = None
    """A genuine code refused for time (CodeRefused): the transaction claims it all the same."""
    event_id: str | None = None
    """The notification's id when the merchant takes notifications
    (paycode.server.notifications.events)."""
    notices: Mapping[str, tuple[str, str]] | None = None
    """outcome -> (event type, body): the outbox row the transaction writes for that outcome;
    outcomes before the claim have none (nothing happened to a payment)."""
    texts: Mapping[str, str] = field(default_factory=dict)
    """outcome -> json.dumps of its reply body, where planning had it already (the failures)."""

    def guard_scopes(self, settings: GuardSettings) -> GuardScopes:
        """The request's guard counters, plus those of the handles the code named at this
        merchant: a guess counts there, and a genuine code meets the block forgeries aimed at
        its handle left there (nothing else counts a genuine code)."""
        handles = self.named_handles if self.counts_as_guess else ()
        if self.accepted is not None:
            handles = ((self.accepted.version, self.accepted.device.handle),)
        merchant_id = self.attempt.terminal.merchant_id
        return with_handles(self.attempt.guard_scopes, settings, merchant_id, handles)

    @property
    def counts_as_guess(self) -> bool:
        """A rejection the guessing guard counts (paycode.server.safety.guard)."""
        return self.rejection in COUNTED_FAILURES

    @property
    def claim_expires_at_s(self) -> float:
        assert self.accepted is not None
        return claim_expiry_s(self.accepted.step)

    @property
    def burn_expires_at_s(self) -> float:
        assert self.burn is not None
        return claim_expiry_s(self.burn.step)

    @property
    def drift_steps(self) -> int:
        """The drift to remember, judged against this worker's cached row (for its cache)."""
        assert self.accepted is not None
        return learned_drift(self.accepted.drift_steps, self.accepted.device.drift_steps)

    @property
    def observed_drift_steps(self) -> int:
        """What this code showed, bounded. The transaction applies learned_drift's latency rule
        against the row it reads, since another worker may have moved the drift since."""
        assert self.accepted is not None
        return max(-DRIFT_STEPS_MAX, min(DRIFT_STEPS_MAX, self.accepted.drift_steps))

    def reply_texts(self) -> dict[str, list[int | str]]:
        """outcome -> [status, JSON body]: what the transaction stores for its key."""
        texts = self.texts
        return {
            name: [status, texts.get(name) or json.dumps(body)]
            for name, (status, body) in self.replies.items()
        }

    def notice_texts(self) -> str | None:
        """outcome -> [event type, body] as JSON for the PostgreSQL function; None: no row."""
        if self.notices is None:
            return None
        return json.dumps({name: list(notice) for name, notice in self.notices.items()})


def learned_drift(observed_steps: int, current_steps: int) -> int:
    """A code shown one step after it was made is ordinary latency, not a slow clock: learning
    -1 from it would stretch that device's window past 60 s. Anything else moves the drift."""
    if observed_steps == current_steps - 1:
        return current_steps
    return max(-DRIFT_STEPS_MAX, min(DRIFT_STEPS_MAX, observed_steps))


def payment_reply(
    *,
    payment_id: str,
    status: str,
    money: Money,
    refunded_minor: int,
    merchant_id: str,
    merchant_order_id: str | None,
    code_version: str | None,
    failure_code: str | None,
    created_at_s: float,
) -> dict[str, Any]:
    return {
        "payment_id": payment_id,
        "status": status,
        "amount": format_amount(money),
        "amount_minor": money.amount_minor,
        "currency": money.currency,
        "refunded": format_amount(Money(refunded_minor, money.currency)),
        "refunded_minor": refunded_minor,
        "merchant_id": merchant_id,
        "merchant_order_id": merchant_order_id,
        "code_version": code_version,
        "failure_code": failure_code,
        "created_at": iso_time(created_at_s),
    }


def payment_json(payment: Payment) -> dict[str, Any]:
    reply = payment_reply(
        payment_id=payment.id,
        status=payment.status,
        money=Money(payment.amount_minor, payment.currency),
        refunded_minor=payment.refunded_minor,
        merchant_id=payment.merchant_id,
        merchant_order_id=payment.merchant_order_id,
        code_version=payment.code_version,
        failure_code=payment.failure_code,
        created_at_s=payment.created_at_s,
    )
    if payment.online_issuer_id is not None:
        reply[ISSUED_ONLINE] = True
    if payment.status == PaymentStatus.PENDING_CONFIRMATION and payment.confirm_by_s is not None:
        reply["confirm_by"] = iso_time(payment.confirm_by_s)
    if payment.mandate_id is not None:
        reply["points"] = points_leg_json(payment)
    return reply


def points_leg_json(payment: Payment) -> dict[str, Any]:
    """A points redemption's two legs (docs/spec.md §16): `amount` is the whole price, of which
    `value` was paid with points and `money` with money; `refunded` counts the money leg."""
    money_minor = payment.amount_minor - payment.points_value_minor
    return {
        "mandate_id": payment.mandate_id,
        "asset": POINTS_ASSET,
        "points": payment.points,
        "refunded_points": payment.points_refunded,
        "value": format_amount(Money(payment.points_value_minor, payment.currency)),
        "value_minor": payment.points_value_minor,
        "money": format_amount(Money(money_minor, payment.currency)),
        "money_minor": money_minor,
    }


def claim_expiry_s(step: int) -> float:
    """When the claim of a code of `step` may go: it outlives every moment the code could
    verify (at most steps_back + DRIFT_STEPS_MAX steps after its step)."""
    return float((step + 1 + CLAIM_STEPS_KEPT) * STEP_SECONDS)


def plan_charge(
    attempt: ChargeAttempt,
    body: dict[str, Any],
    directory: Directory,
    keys: VerifierKeys,
    *,
    statuses: Mapping[str, VersionStatus] = DEFAULT_STATUS,
    limits: LimitSettings = DEFAULT_LIMITS,
) -> ChargePlan:
    """The plan for this request; a request that cannot pay becomes a stored rejection."""
    try:
        code = string_field(body, "code", max_chars=CODE_CHARS_MAX)
        assert code is not None
        money = money_fields(body)
        order_id = string_field(
            body, "merchant_order_id", max_chars=ORDER_ID_CHARS_MAX, required=False
        )
        if money.currency != attempt.terminal.currency:
            raise ApiError(
                ErrorCode.CURRENCY_MISMATCH, f"this merchant takes {attempt.terminal.currency}"
            )
        terminal = attempt.terminal
        bindings = charging_point_bindings(terminal.merchant_id, terminal.terminal_id)
        accepted, device = verify_charge_code(
            code.strip(), attempt.now_s, directory, keys, bindings=bindings, statuses=statuses
        )
    except ApiError as error:
        status = error.status
        return ChargePlan(
            attempt,
            {error.code: (status, problem_body(error.code, error.message, status))},
            rejection=error.code,
            named_handles=getattr(error, "handles", ()),
            burn=getattr(error, "burn", None),
        )
    payment_id = new_id("pay")
    confirm_by_s = attempt.now_s + limits.confirm_window_s
    replies, texts = _replies(
        attempt,
        accepted,
        issued_online=device.online_for is not None,
        payment_id=payment_id,
        money=money,
        order_id=order_id,
        confirm_by_s=confirm_by_s,
    )
    event_id = events.new_event_id() if attempt.terminal.notify else None
    return ChargePlan(
        attempt,
        replies,
        accepted=accepted,
        device=device,
        payment_id=payment_id,
        transaction_id=time_ordered_id("txn", attempt.now_s),
        amount_minor=money.amount_minor,
        currency=money.currency,
        order_id=order_id,
        limits=limits.defaults_minor(money.currency),
        day=limits.day(attempt.now_s),
        confirm_by_s=confirm_by_s,
        event_id=event_id,
        notices=_notices(event_id, replies, attempt.now_s) if event_id else None,
        texts=texts,
    )


FAILURE_CODE_NULL = '"failure_code":null'
REPLY_ONLY_MEMBERS = ("notice", "code", "detail")
"""Reply members that are advice to the till, not part of the payment a merchant is told."""


def _notices(
    event_id: str, replies: Mapping[str, tuple[int, dict[str, Any]]], now_s: float
) -> dict[str, tuple[str, str]]:
    """Every notification body the transaction can end with, rendered before it starts, from
    the replies: the payment as the till sees it, succeeded, pending or failed. The failures
    share one rendering: `"failure_code":null` occurs once in it (a JSON string value cannot
    hold its unescaped quotes), and is replaced by each failure's code."""

    def told(reply: dict[str, Any], event_type: str) -> str:
        payment = {key: value for key, value in reply.items() if key not in REPLY_ONLY_MEMBERS}
        return events.render(event_id, event_type, payment, now_s)

    success = replies[PaymentStatus.SUCCEEDED][1]
    failed = told(success | {"status": PaymentStatus.FAILED}, events.FAILED)
    assert success["failure_code"] is None and failed.count(FAILURE_CODE_NULL) == 1
    notices: dict[str, tuple[str, str]] = {
        PaymentStatus.SUCCEEDED: (events.SUCCEEDED, told(success, events.SUCCEEDED)),
        ErrorCode.CONFIRMATION_REQUIRED: (
            events.PENDING_CONFIRMATION,
            told(replies[ErrorCode.CONFIRMATION_REQUIRED][1], events.PENDING_CONFIRMATION),
        ),
    }
    for outcome in RECORDED_FAILURES:
        body = failed.replace(FAILURE_CODE_NULL, f'"failure_code":{json.dumps(outcome)}')
        notices[outcome] = (events.FAILED, body)
    return notices


def _replies(
    attempt: ChargeAttempt,
    accepted: Accepted,
    *,
    issued_online: bool = False,
    payment_id: str,
    money: Money,
    order_id: str | None,
    confirm_by_s: float,
) -> tuple[dict[str, tuple[int, dict[str, Any]]], dict[str, str]]:
    """Every reply the transaction can end with, rendered before it starts, and the JSON text
    of those taken from the constant table (FAILURE_REPLIES)."""
    success = payment_reply(
        payment_id=payment_id,
        status=PaymentStatus.SUCCEEDED,
        money=money,
        refunded_minor=0,
        merchant_id=attempt.terminal.merchant_id,
        merchant_order_id=order_id,
        code_version=accepted.version,
        failure_code=None,
        created_at_s=attempt.now_s,
    )
    if issued_online:
        success[ISSUED_ONLINE] = True
    if accepted.deprecated:
        success["notice"] = f"code version {accepted.version} is deprecated"
    pending = success | {
        "status": PaymentStatus.PENDING_CONFIRMATION,
        "code": ErrorCode.CONFIRMATION_REQUIRED,
        "detail": "above the customer's password-free limit: waiting for the customer to "
        "confirm on their phone",
        "confirm_by": iso_time(confirm_by_s),
    }
    replies: dict[str, tuple[int, dict[str, Any]]] = {
        PaymentStatus.SUCCEEDED: (201, success),
        ErrorCode.CONFIRMATION_REQUIRED: (202, pending),
    }
    texts: dict[str, str] = {}
    paid_by = f', "payment_id": {json.dumps(payment_id)}}}'  # json.dumps' separators
    for outcome, (status, body) in FAILURE_REPLIES.items():
        text = _FAILURE_TEXTS[outcome]
        if outcome in RECORDED_FAILURES:
            body = body | {"payment_id": payment_id}  # noqa: PLW2901 - a copy, with its id
            text = text[:-1] + paid_by
        replies[outcome] = (status, body)
        texts[outcome] = text
    return replies, texts
