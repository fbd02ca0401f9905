"""The PIN and log-in guards under concurrency, over real HTTP (issue 19): each attempt takes
its place in the count before its secret is checked, so a burst of concurrent guesses checks
no more of them than the limit (paycode.server.safety.guard.reserve_attempt). "Checked" is
measured from the answers: a checked wrong PIN answers 403 pin_invalid (a wrong password 401),
one refused unchecked answers 429 rate_limited."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import delete

from paycode.client import pending
from paycode.server.charge import step_up
from paycode.server.dashboard import access
from paycode.server.database.models import FailureCounter
from paycode.server.wallets import sessions
from paycode.shared.errors import ServerRejected
from tests.support.dashboard import Browser, dashboard_merchant
from tests.support.servers import Server, all_at_once
from tests.support.shop import (
    PASSWORD,
    charge_waiting_for_pin,
    new_phone,
    new_user,
    use_fast_keystore,
)

PIN = "246810"
WRONG_PIN = "135790"
BURST = 24


@pytest.fixture(autouse=True)
def _fast_wallets(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


def _forget_addresses(server: Server) -> None:
    """Every request here comes from 127.0.0.1: each test starts with that address's wallet
    and dashboard counts at zero, so the tests do not block one another."""
    with server.session() as session:
        session.execute(
            delete(FailureCounter).where(
                FailureCounter.scope.like("wallet-ip:%")
                | FailureCounter.scope.like("dashboard-ip:%")
            )
        )


def _log_in(server: Server, user: str, password: str) -> tuple[int, dict[str, object], str]:
    """POST /v1/wallet/sessions over HTTP: (status, JSON body, Retry-After or "")."""
    body = json.dumps({"user": user, "password": password}).encode()
    request = urllib.request.Request(
        server.url + "/v1/wallet/sessions", data=body,
        headers={"Content-Type": "application/json"}, method="POST",
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read()), ""
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers.get("Retry-After", "")


def _answer_code(call: object) -> str:
    try:
        call()  # type: ignore[operator]
    except ServerRejected as error:
        return error.code
    return "ok"


def test_concurrent_wrong_pins_check_no_more_than_the_limit(
    live_server: Server, tmp_path: Path
) -> None:
    _, wallet, payment_id = charge_waiting_for_pin(live_server, tmp_path, "burst", PIN)

    answers = Counter(
        all_at_once([lambda: _answer_code(lambda: pending.confirm(wallet, payment_id, WRONG_PIN))
                     for _ in range(BURST)])
    )  # fmt: skip
    print(f"{BURST} concurrent wrong PINs: {dict(answers)}")
    assert answers["pin_invalid"] <= step_up.PIN_FAILURES_MAX, answers
    assert answers["pin_invalid"] + answers["rate_limited"] == BURST, answers


def test_concurrent_dashboard_log_ins_check_no_more_than_the_limit(live_server: Server) -> None:
    shop = dashboard_merchant(live_server)
    burst = 40
    pages = all_at_once(
        [lambda: Browser(live_server).log_in(shop.name, "a guess") for _ in range(burst)]
    )
    statuses = Counter(page.status for page in pages)
    print(f"{burst} concurrent wrong dashboard log-ins: {dict(statuses)}")
    assert statuses[401] <= access.LOGIN_FAILURES_MAX, statuses
    assert statuses[401] + statuses[429] == burst, statuses


# -- the wallet's password (POST /v1/wallet/sessions, POST /v1/wallet/pin) ------------------


def test_wallet_password_guessing_is_throttled(live_server: Server) -> None:
    """Ten wrong passwords for one user name, then even the right one waits (429, Retry-After
    a minute: the short per-name block). Before the fix: no 429 at all."""
    _forget_addresses(live_server)
    name = new_user(live_server, "guessed")
    for _ in range(sessions.LOGIN_FAILURES_MAX):
        status, body, _ = _log_in(live_server, name, "a guess")
        assert (status, body["code"]) == (401, "unauthorized"), body
    status, body, retry_after = _log_in(live_server, name, PASSWORD)
    assert (status, body["code"]) == (429, "rate_limited"), body
    assert 1 <= int(retry_after) <= sessions.LOGIN_GUARD.backoff_base_s


def test_concurrent_wallet_password_guesses_check_no_more_than_the_limit(
    live_server: Server,
) -> None:
    _forget_addresses(live_server)
    name = new_user(live_server, "burst")
    burst = 40
    answers = all_at_once([lambda: _log_in(live_server, name, "a guess") for _ in range(burst)])
    statuses = Counter(status for status, _, _ in answers)
    print(f"{burst} concurrent wrong wallet passwords: {dict(statuses)}")
    assert statuses[401] <= sessions.LOGIN_FAILURES_MAX, statuses
    assert statuses[401] + statuses[429] == burst, statuses


def test_wallet_password_guessing_from_one_address_across_names_is_throttled(
    live_server: Server,
) -> None:
    """An address guessing many names (a few each, under the per-name limit) is blocked at
    the per-address limit; a right password from it then waits too."""
    _forget_addresses(live_server)
    name = new_user(live_server, "spray")
    for guess in range(sessions.LOGIN_FAILURES_PER_IP_MAX):
        status, _, _ = _log_in(live_server, f"nobody-{guess}", "a guess")
        assert status == 401
    status, body, retry_after = _log_in(live_server, name, PASSWORD)
    assert (status, body["code"]) == (429, "rate_limited"), body
    assert int(retry_after) >= 1
    _forget_addresses(live_server)
    assert _log_in(live_server, name, PASSWORD)[0] == 201  # the name itself was never blocked


def test_set_pin_password_guessing_is_throttled(live_server: Server, tmp_path: Path) -> None:
    """POST /v1/wallet/pin checks the password too: its wrong guesses count with the log-in's."""
    _forget_addresses(live_server)
    name = new_user(live_server, "pinpw")
    wallet = new_phone(live_server, tmp_path / name, name, ["v2"])
    for _ in range(sessions.LOGIN_FAILURES_MAX):
        assert _answer_code(lambda: pending.set_pin(wallet, password="a guess", pin=PIN)) == (
            "unauthorized"
        )
    blocked = _answer_code(lambda: pending.set_pin(wallet, password=PASSWORD, pin=PIN))
    assert blocked == "rate_limited"
    assert _log_in(live_server, name, PASSWORD)[0] == 429
