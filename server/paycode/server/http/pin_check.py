"""The payment PIN, checked outside any transaction (scrypt takes tens of milliseconds), with
wrong PINs counted towards a block (paycode.server.charge.step_up.PIN_GUARD) so that a stolen
phone cannot try them all. Used to confirm a pending payment and to pay a merchant's QR above
the password-free limits."""

from __future__ import annotations

import math

from flask import Response

from paycode.server.charge import step_up
from paycode.server.database.engine import db
from paycode.server.http.problems import problem, rate_limited
from paycode.server.http.wallet import authenticate_device
from paycode.server.safety.guard import AttemptRefused, Standing, standing
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError


def check_pin(pin: str, now_s: float) -> tuple[str, str]:
    """(user id, device id) of the signing device whose user's PIN this is; each check first
    reserves one of the user's attempts (step_up.reserve_pin_attempt), a wrong PIN keeps it
    and blocks at the limit (step_up.PIN_GUARD), so neither a stolen phone nor a burst of
    concurrent requests can try more than the limit."""
    with db.transaction() as session:
        device = authenticate_device(session, now_s)
        user_id, device_id = device.user_id, device.id
        stored = step_up.stored_pin(session, user_id)
    if stored is None:
        step_up.pin_matches(stored, pin)  # raises pin_not_set
    try:
        # Its own transaction: a refusal rolls the reservation back, not the signed call.
        with db.transaction() as session:
            step_up.reserve_pin_attempt(session, user_id, now_s)
    except AttemptRefused as refused:
        raise PinBlocked(refused.wait_s) from None
    right = step_up.pin_matches(stored, pin)
    with db.transaction() as session:
        step_up.settle_pin_attempt(session, user_id, now_s, right=right)
        # Read where it was written: the count as this wrong PIN left it
        left = None if right else standing(session.connection(), _pin_scope(user_id))
    if left is not None:
        raise _wrong_pin(left, now_s)
    return user_id, device_id


def _pin_scope(user_id: str) -> str:
    (scope,) = step_up.pin_scopes(user_id).names
    return scope


class PinWrong(ApiError):
    """`pin_invalid` with the tries left before the pause (docs/api.md), so the owner who
    mistyped knows to stop and look; an attacker learns nothing the limit does not say."""

    def __init__(self, detail: str, tries_left: int) -> None:
        super().__init__(ErrorCode.PIN_INVALID, detail)
        self.tries_left = tries_left


def _wrong_pin(now: Standing, now_s: float) -> PinWrong:
    if now.blocked_until_s is not None and now.blocked_until_s > now_s:
        paused = _minutes(now.blocked_until_s - now_s)
        return PinWrong(f"wrong PIN: confirmations are paused for {paused}", 0)
    left = max(0, step_up.PIN_FAILURES_MAX - now.failures)
    settings = step_up.PIN_GUARD
    pause_s = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** min(now.strikes, 20))
    tries = "1 try" if left == 1 else f"{left} tries"
    return PinWrong(f"wrong PIN: {tries} left before a {_minutes(pause_s, unit=True)} pause", left)


def _minutes(seconds: float, *, unit: bool = False) -> str:
    """Whole minutes, at least one: "5 minutes", or "5-minute" as a `unit` before a noun."""
    whole = max(1, math.ceil(seconds / 60 - 1e-9))
    if unit:
        return f"{whole}-minute"
    return "1 minute" if whole == 1 else f"{whole} minutes"


def pin_wrong(error: PinWrong) -> Response:
    """The reply to a PinWrong: register it on each blueprint that checks PINs."""
    return problem(error.code, error.message, error.status, tries_left=error.tries_left)


class PinBlocked(Exception):
    def __init__(self, wait_s: float) -> None:
        super().__init__("PIN attempts blocked")
        self.wait_s = wait_s


def pin_blocked(error: PinBlocked) -> Response:
    """The reply to a PinBlocked: register it on each blueprint that checks PINs."""
    return rate_limited(error.wait_s, "too many wrong PINs")
