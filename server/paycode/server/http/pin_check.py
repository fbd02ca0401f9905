"""The payment PIN, checked outside any transaction (scrypt takes tens of milliseconds), with
wrong PINs counted towards a block (paycode.server.charge.step_up.PIN_GUARD) so that a stolen
phone cannot try them all. Used to confirm a pending payment and to pay a merchant's QR above
the password-free limits."""

from __future__ import annotations

from flask import Response

from paycode.server.charge import step_up
from paycode.server.database.engine import db
from paycode.server.http.problems import rate_limited
from paycode.server.http.wallet import authenticate_device
from paycode.server.safety.guard import AttemptRefused
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
    if not right:
        raise ApiError(ErrorCode.PIN_INVALID, "the PIN is not right")
    return user_id, device_id


class PinBlocked(Exception):
    def __init__(self, wait_s: float) -> None:
        super().__init__("PIN attempts blocked")
        self.wait_s = wait_s


def pin_blocked(error: PinBlocked) -> Response:
    """The reply to a PinBlocked: register it on each blueprint that checks PINs."""
    return rate_limited(error.wait_s, "too many wrong PINs")
