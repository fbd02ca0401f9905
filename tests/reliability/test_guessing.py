"""9. Guessing under concurrency: bursts of concurrent wrong guesses at every guarded secret,
over real HTTP (threads against `live_server`, SQLite and PostgreSQL), window after window.

    wallet log-in      POST /v1/wallet/sessions               wrong passwords, one user name
    set-PIN password   POST /v1/wallet/pin                    wrong passwords, same counter
    PIN confirm        POST /v1/wallet/payments/{id}/confirm  wrong PINs for one pending payment
    dashboard log-in   POST /dashboard/login                  wrong passwords, one merchant

Each window fires a burst (SHORT: 24, FULL: 48) of wrong guesses released at one moment (a
barrier). A guess the server really checked answers 401 (a password) or 403 `pin_invalid` (a
PIN); one refused unchecked answers 429. The guard reserves its attempt before the secret is hashed
(paycode.server.safety.guard.reserve_attempt), so in every window the checked count must be
at most the guard's limit; more is an anomaly, as is any other answer, and so is a window
where none was checked (the guesses never reached the secret: nothing would be measured).
Between windows the test moves the guard's row past its window and its block (the server's
own clock is not touched), as if the attacker had waited, keeping its strikes; the
per-address counters are cleared, so that only the guard under test is measured.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import delete, or_, update

from paycode.client import pending
from paycode.server.charge import step_up
from paycode.server.dashboard import access
from paycode.server.database.models import FailureCounter
from paycode.server.safety.guard import GuardSettings
from paycode.server.wallets import sessions
from paycode.shared.errors import ServerRejected
from tests.reliability.figures import Figures, Scale
from tests.support.dashboard import Browser, dashboard_merchant
from tests.support.servers import Server, all_at_once
from tests.support.shop import (
    charge_waiting_for_pin,
    use_fast_keystore,
    user_id,
)

SECTION = "9. Guessing under concurrency"
PIN = "246810"
WRONG_PIN = "135790"
HTTP_TIMEOUT_S = 30.0
CHECKED = frozenset({"401", "403 pin_invalid"})
REFUSED = "429"


@pytest.fixture(autouse=True)
def _fast_wallets(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


@dataclass(frozen=True)
class Target:
    """One guarded secret: how to guess once (the answer as "status [code]"), its limit per
    window, and the guard row a window is counted in."""

    name: str
    guess: Callable[[], str]
    limit: int
    scope: str
    settings: GuardSettings


def _wallet_log_in(server: Server, user: str) -> str:
    body = json.dumps({"user": user, "password": "a wrong guess"}).encode()
    request = urllib.request.Request(
        server.url + "/v1/wallet/sessions", data=body,
        headers={"Content-Type": "application/json"}, method="POST",
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as reply:
            return str(reply.status)
    except urllib.error.HTTPError as error:
        error.close()
        return str(error.code)


def _rejected_code(call: Callable[[], object]) -> str:
    try:
        call()
    except ServerRejected as error:
        return f"{error.status} {error.code}" if error.status == 403 else str(error.status)
    return "200"


def _targets(server: Server, home: Path) -> Iterator[Target]:
    name, wallet, payment_id = charge_waiting_for_pin(server, home, "guessed", PIN)
    yield Target(
        "wallet log-in", lambda: _wallet_log_in(server, name), sessions.LOGIN_FAILURES_MAX,
        f"wallet:{name}", sessions.LOGIN_GUARD,
    )  # fmt: skip
    yield Target(
        "set-PIN password",
        lambda: _rejected_code(lambda: pending.set_pin(wallet, password="a guess", pin=PIN)),
        sessions.LOGIN_FAILURES_MAX, f"wallet:{name}", sessions.LOGIN_GUARD,
    )  # fmt: skip
    yield Target(
        "PIN confirm",
        lambda: _rejected_code(lambda: pending.confirm(wallet, payment_id, WRONG_PIN)),
        step_up.PIN_FAILURES_MAX, f"pin:{user_id(server, name)}", step_up.PIN_GUARD,
    )  # fmt: skip
    shop = dashboard_merchant(server)
    yield Target(
        "dashboard log-in", lambda: str(Browser(server).log_in(shop.name, "a guess").status),
        access.LOGIN_FAILURES_MAX, f"dashboard:{shop.name}", access.LOGIN_GUARD,
    )  # fmt: skip


def _next_window(server: Server, target: Target) -> None:
    """As if the attacker waited out the window and the block: the row's window and block are
    moved into the past (its strikes stay); the per-address counters are cleared."""
    now_s = time.time()
    with server.session() as session:
        session.execute(
            update(FailureCounter)
            .where(FailureCounter.scope == target.scope)
            .values(window_start_s=now_s - target.settings.window_s - 1.0)
        )
        session.execute(
            update(FailureCounter)
            .where(
                FailureCounter.scope == target.scope, FailureCounter.blocked_until_s.is_not(None)
            )
            .values(blocked_until_s=now_s - 1.0)
        )
        session.execute(
            delete(FailureCounter).where(
                or_(
                    FailureCounter.scope.like("wallet-ip:%"),
                    FailureCounter.scope.like("dashboard-ip:%"),
                )
            )
        )


def _one_window(target: Target, burst: int, figures: Figures, where: str) -> int:
    answers = Counter(all_at_once([target.guess for _ in range(burst)]))
    figures.runs += 1
    figures.operations += burst
    figures.faults += burst  # every request is a wrong guess
    checked = sum(count for answer, count in answers.items() if answer in CHECKED)
    unexpected = {a: n for a, n in answers.items() if a not in CHECKED and a != REFUSED}
    if not 1 <= checked <= target.limit:
        figures.anomaly(f"{where}: {checked} guesses checked, limit {target.limit}: {answers}")
    if unexpected:
        figures.anomaly(f"{where}: answers other than checked or 429: {unexpected}")
    return checked


def test_concurrent_guesses_are_checked_at_most_the_limit_per_window(
    live_server: Server, tmp_path: Path, figures: Figures, scale: Scale
) -> None:
    figures.section = SECTION
    windows, burst = scale.pick(short=1, full=4), scale.pick(short=24, full=48)
    for target in _targets(live_server, tmp_path):
        per_window = []
        started = time.monotonic()
        for window in range(windows):
            _next_window(live_server, target)
            where = f"{live_server.backend} {target.name} window {window}"
            per_window.append(_one_window(target, burst, figures, where))
        figures.details[f"{target.name}: checked per window (limit {target.limit})"] = (
            f"{per_window} of {burst} concurrent each, "
            f"{round((time.monotonic() - started) / windows, 2)} s a window"
        )
    figures.details["backend"] = live_server.backend
    assert figures.anomalies == 0, figures.anomaly_notes
