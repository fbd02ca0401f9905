"""The worker's purge keeps each guard's counters by that guard's own rule (issue 19): a PIN or
dashboard counter lives through its 900 s window, however short the charge guard's 300 s one.
Time is a parameter here: the attempts, the purge and the next attempts are dated, on SQLite
and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session

from paycode.server.charge import step_up
from paycode.server.dashboard import access
from paycode.server.database.models import FailureCounter
from paycode.server.operations import purge
from paycode.server.safety.guard import AttemptRefused
from tests.support.servers import Server
from tests.support.shop import new_user, unique, user_id

Attempt = Callable[[Session, float], None]
"""One wrong attempt at `now_s`: reserve, then settle as wrong."""


def _wrong_pin(user: str) -> Attempt:
    def attempt(session: Session, now_s: float) -> None:
        step_up.reserve_pin_attempt(session, user, now_s)
        step_up.settle_pin_attempt(session, user, now_s, right=False)

    return attempt


def _wrong_dashboard_password(name: str) -> Attempt:
    scopes = access.login_scopes(name, None)

    def attempt(session: Session, now_s: float) -> None:
        access.reserve_login(session, scopes, now_s)
        access.settle_login(session, scopes, now_s, right=False)

    return attempt


@pytest.mark.parametrize("guard", ["pin", "dashboard"])
def test_purge_at_400_s_does_not_forget_wrong_pins_or_passwords(server: Server, guard: str) -> None:
    """limit - 1 wrong attempts, the worker's purge 400 s later (past the charge guard's 300 s
    window, inside the 900 s one of these guards), then one more wrong attempt blocks: the
    next is refused. Before the fix the purge wiped the count and the next attempts passed."""
    if guard == "pin":
        attempt, limit = _wrong_pin(user_id(server, new_user(server))), step_up.PIN_FAILURES_MAX
    else:
        attempt, limit = _wrong_dashboard_password(unique("Shop")), access.LOGIN_FAILURES_MAX
    now_s = time.time()
    for _ in range(limit - 1):
        with server.session() as session:
            attempt(session, now_s)
    with server.session() as session:
        purge.purge_expired(session, now_s + 400.0)
    with server.session() as session:
        attempt(session, now_s + 400.0)  # the limit-th: checked, and it blocks
    with pytest.raises(AttemptRefused), server.session() as session:
        attempt(session, now_s + 401.0)


def test_purge_still_drops_pin_counters_quiet_by_their_own_rule(server: Server) -> None:
    """Past the 900 s window with no block in the last 86,400 s the counter goes (the table
    stays bounded); inside that time it stays."""
    user = user_id(server, new_user(server))
    now_s = time.time()
    with server.session() as session:
        _wrong_pin(user)(session, now_s)
    scope = f"pin:{user}"
    for at_s, kept in ((now_s + 899.0, True), (now_s + 900.0, False)):
        with server.session() as session:
            purge.purge_expired(session, at_s)
            assert (session.get(FailureCounter, scope) is not None) is kept, at_s
