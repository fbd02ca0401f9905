"""The PIN and log-in guards under concurrency, over real HTTP (issue 19): each attempt takes
its place in the count before its secret is checked, so a burst of concurrent guesses checks
no more of them than the limit (paycode.server.safety.guard.reserve_attempt). "Checked" is
measured from the answers: a checked wrong PIN answers 403 pin_invalid (a wrong password 401),
one refused unchecked answers 429 rate_limited."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from paycode.client import pending
from paycode.server.charge import step_up
from paycode.server.dashboard import access
from paycode.server.operations import admin
from paycode.shared.errors import ServerRejected
from tests.support.dashboard import Browser, dashboard_merchant
from tests.support.servers import Server, all_at_once
from tests.support.shop import PASSWORD, code_of, new_phone, new_till, new_user, use_fast_keystore

PIN = "246810"
WRONG_PIN = "135790"
BURST = 24


@pytest.fixture(autouse=True)
def _fast_wallets(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


def _answer_code(call: object) -> str:
    try:
        call()  # type: ignore[operator]
    except ServerRejected as error:
        return error.code
    return "ok"


def test_concurrent_wrong_pins_check_no_more_than_the_limit(
    live_server: Server, tmp_path: Path
) -> None:
    name = new_user(live_server, "burst", top_up="1000.00")
    with live_server.session() as session:
        admin.set_limits(
            session, name, "CNY", payment_max="5.00", daily_max=None, daily_count_max=None,
            reset=False,
        )  # fmt: skip
    wallet = new_phone(live_server, tmp_path / name, name, ["v2"])
    pending.set_pin(wallet, password=PASSWORD, pin=PIN)
    till = new_till(live_server)
    waiting = till.charge(code=code_of(wallet, "v2"), amount="9.00", currency="CNY")
    payment_id = waiting["payment_id"]

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
