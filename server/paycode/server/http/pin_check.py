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
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError


def check_pin(pin: str, now_s: float) -> tuple[str, str]:
    """(user id, device id) of the signing device whose user's PIN this is; wrong PINs count
    towards a block (confirmations.PIN_GUARD), so a stolen phone cannot try them all."""
    with db.transaction() as session:
        device = authenticate_device(session, now_s)
        user_id, device_id = device.user_id, device.id
        wait_s = step_up.pin_blocked_for_s(session, user_id, now_s)
        stored = step_up.stored_pin(session, user_id)
    if wait_s is not None:
        raise PinBlocked(wait_s)
    if not step_up.pin_matches(stored, pin):
        with db.transaction() as session:
            step_up.count_wrong_pin(session, user_id, now_s)
        raise ApiError(ErrorCode.PIN_INVALID, "the PIN is not right")
    return user_id, device_id


class PinBlocked(Exception):
    def __init__(self, wait_s: float) -> None:
        super().__init__("PIN attempts blocked")
        self.wait_s = wait_s


def pin_blocked(error: PinBlocked) -> Response:
    """The reply to a PinBlocked: register it on each blueprint that checks PINs."""
    return rate_limited(error.wait_s, "too many wrong PINs")
