"""The charge on PostgreSQL: one call of the `paycode_charge` function, in autocommit, so a
charge costs one round trip (the function's body is the whole transaction).

The function is the production path; its source is the SQL file of the migration that last
installed it (paycode.server.database.functions), and paycode.server.charge.steps is the
reference it is held to. It is called with named parameters: a plan that was refused before
any claim (`plan.rejection`) leaves the claim's parameters NULL, but for a genuine code refused
for time, whose claim is made all the same (`plan.burn`).
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from sqlalchemy import Engine

from paycode.server.charge.planning import ChargePlan
from paycode.server.charge.result import ChargeResult
from paycode.server.safety.guard import GuardSettings
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError

REQUEST_PARAMETERS = (
    "p_guard_scopes",
    "p_guard_limits",
    "p_guard_window_s",
    "p_guard_base_s",
    "p_guard_max_s",
    "p_count_failure",
    "p_terminal_id",
    "p_nonce",
    "p_nonce_expires_at_s",
    "p_scope",
    "p_key",
    "p_request_hash",
    "p_now_s",
    "p_rejection",
    "p_replies",
    "p_suspect_device_id",
)
"""What every call passes: the guard, the request's identity, and the replies."""
CLAIM_PARAMETERS = (
    "p_device_id",
    "p_user_id",
    "p_claim_key",
    "p_claim_expires_at_s",
    "p_drift_steps",
    "p_payment_id",
    "p_transaction_id",
    "p_merchant_id",
    "p_amount_minor",
    "p_currency",
    "p_order_id",
    "p_code_version",
    "p_limits",
    "p_day",
    "p_confirm_by_s",
    "p_event_id",
    "p_notices",
)
"""What a code that verified passes: the claim, the money, the limits, the notification."""
CALL_SQL = (
    "SELECT o_outcome, o_status, o_body, o_request_hash FROM paycode_charge("
    "p_guard_scopes => %(p_guard_scopes)s, p_guard_limits => %(p_guard_limits)s, "
    "p_guard_window_s => %(p_guard_window_s)s, p_guard_base_s => %(p_guard_base_s)s, "
    "p_guard_max_s => %(p_guard_max_s)s, p_count_failure => %(p_count_failure)s, "
    "p_terminal_id => %(p_terminal_id)s, p_nonce => %(p_nonce)s, "
    "p_nonce_expires_at_s => %(p_nonce_expires_at_s)s, p_scope => %(p_scope)s, "
    "p_key => %(p_key)s, p_request_hash => %(p_request_hash)s, p_now_s => %(p_now_s)s, "
    "p_rejection => %(p_rejection)s, p_replies => %(p_replies)s, "
    "p_suspect_device_id => %(p_suspect_device_id)s, p_device_id => %(p_device_id)s, "
    "p_user_id => %(p_user_id)s, p_claim_key => %(p_claim_key)s, "
    "p_claim_expires_at_s => %(p_claim_expires_at_s)s, p_drift_steps => %(p_drift_steps)s, "
    "p_payment_id => %(p_payment_id)s, p_transaction_id => %(p_transaction_id)s, "
    "p_merchant_id => %(p_merchant_id)s, p_amount_minor => %(p_amount_minor)s, "
    "p_currency => %(p_currency)s, p_order_id => %(p_order_id)s, "
    "p_code_version => %(p_code_version)s, p_limits => %(p_limits)s, p_day => %(p_day)s, "
    "p_confirm_by_s => %(p_confirm_by_s)s, p_event_id => %(p_event_id)s, "
    "p_notices => %(p_notices)s)"
)
"""Written out, not composed: every name is one of the two lists above (the call test checks)."""


def call_parameters(plan: ChargePlan, guard: GuardSettings) -> dict[str, Any]:
    """The function's arguments by name; the claim's are NULL for a refused plan."""
    attempt = plan.attempt
    scopes = plan.guard_scopes(guard)
    parameters: dict[str, Any] = {
        "p_guard_scopes": list(scopes.names),
        "p_guard_limits": list(scopes.limits),
        "p_guard_window_s": guard.window_s,
        "p_guard_base_s": guard.backoff_base_s,
        "p_guard_max_s": guard.backoff_max_s,
        "p_count_failure": plan.counts_as_guess,
        "p_terminal_id": attempt.terminal.terminal_id,
        "p_nonce": attempt.nonce,
        "p_nonce_expires_at_s": attempt.nonce_expires_at_s,
        "p_scope": attempt.scope,
        "p_key": attempt.idempotency_key,
        "p_request_hash": attempt.request_hash,
        "p_now_s": attempt.now_s,
        "p_rejection": plan.rejection,
        "p_replies": json.dumps(plan.reply_texts()),
        # No device is locked everywhere any more: forgeries block a handle at one merchant
        # (paycode.server.safety.guard.handle_scope), so the function's lock never fires.
        "p_suspect_device_id": None,
    }
    return parameters | _claim_parameters(plan)


def _claim_parameters(plan: ChargePlan) -> dict[str, Any]:
    accepted, device, limits = plan.accepted, plan.device, plan.limits
    if plan.burn is not None:  # a genuine code refused for time: claimed, nothing else
        burn = plan.burn
        return dict.fromkeys(CLAIM_PARAMETERS) | {
            "p_device_id": burn.device_id,
            "p_claim_key": burn.claim_key,
            "p_claim_expires_at_s": plan.burn_expires_at_s,
        }
    if accepted is None or device is None or limits is None:
        return dict.fromkeys(CLAIM_PARAMETERS)
    return {
        "p_device_id": accepted.device.device_id,
        "p_user_id": device.user_id,
        "p_claim_key": accepted.claim_key.decode(),
        "p_claim_expires_at_s": plan.claim_expires_at_s,
        "p_drift_steps": plan.observed_drift_steps,
        "p_payment_id": plan.payment_id,
        "p_transaction_id": plan.transaction_id,
        "p_merchant_id": plan.attempt.terminal.merchant_id,
        "p_amount_minor": plan.amount_minor,
        "p_currency": plan.currency,
        "p_order_id": plan.order_id,
        "p_code_version": accepted.version,
        "p_limits": [
            limits.payment_max_minor,
            limits.daily_max_minor,
            limits.daily_count_max,
            limits.code_payment_max_minor,
        ],
        "p_day": plan.day,
        "p_confirm_by_s": plan.confirm_by_s,
        "p_event_id": plan.event_id,
        "p_notices": plan.notice_texts(),
    }


def call_with(engine: Engine, parameters: dict[str, Any]) -> ChargeResult:
    """One call (call_parameters) in autocommit on a pooled connection: the function's body is
    the whole transaction."""
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert driver is not None
        driver.autocommit = True
        try:
            cursor = raw.cursor()
            cursor.execute(CALL_SQL, parameters)
            row = cursor.fetchone()
            cursor.close()
        finally:
            if not driver.closed:
                driver.autocommit = False
    except psycopg.OperationalError as error:
        raw.invalidate()  # a dead pooled connection must not serve the next request
        raise ApiError(
            ErrorCode.DATABASE_BUSY, "the database is unavailable; retry shortly"
        ) from error
    finally:
        raw.close()
    assert row is not None
    outcome, status, body, request_hash = row
    return ChargeResult(outcome, status or 0, body or "", request_hash or "")
