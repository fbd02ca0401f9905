"""The till says WHY it waits for the customer's PIN (issue 19, item 23, the till's part): the
charge's 202 answer carries the password-free limit the payment passed (the server's words,
paycode.server.safety.limits.pinless_reason), and the cashier reads "Waiting for the customer
to confirm with their PIN: <why>" on stderr (a barcode gun, or --headless frames) and on the
WAITING screen. Through the real till code path, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from paycode.appkit import rendering
from paycode.merchant_pos import settings
from paycode.merchant_pos.display import render_waiting
from paycode.merchant_pos.messages import waiting_message
from tests.support.servers import Server, run_in_process
from tests.support.shop import (
    POS_MODULE,
    charge,
    code_of,
    new_merchant,
    new_phone,
    new_user,
    person_env,
    set_limits,
    use_fast_keystore,
)

COUNT_REASON = "2 payments a day are password-free and 2 were made today"
WAITING = "Waiting for the customer to confirm with their PIN: "


def test_the_till_says_which_password_free_limit_the_payment_waits_on(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fast_keystore(monkeypatch)
    cafe = new_merchant(server, "Waiting Cafe")
    user = new_user(server, top_up="50.00")
    set_limits(server, user, daily_count_max=2)
    wallet = new_phone(server, tmp_path / "phone", user, ["v2"])
    for _ in range(2):
        assert charge(cafe.till, code_of(wallet, "v2"), "1.00")["status"] == "succeeded"
    settings.save(tmp_path / "pos", settings.validated(server.url, cafe.key_id, cafe.secret, "CNY"))
    env = person_env() | {"PAYCODE_POS_HOME": str(tmp_path / "pos")}
    sale = ["charge", "--amount", "1.00", "--confirm-wait-s", "0.2"]

    by_gun = run_in_process(
        POS_MODULE, env, "--json", *sale, "--source", "stdin", stdin=code_of(wallet, "v2") + "\n"
    )
    assert f"{WAITING}{COUNT_REASON}." in by_gun.stderr.splitlines(), by_gun.stderr
    assert json.loads(by_gun.stdout)["code"] == "cancelled_by_merchant"

    image = tmp_path / "code.png"
    rendering.save_png(rendering.qr_image(code_of(wallet, "v2")), image)
    headless = run_in_process(POS_MODULE, env, *sale, "--source", f"image:{image}", "--headless")
    assert f"{WAITING}{COUNT_REASON}." in headless.stderr.splitlines(), headless.stderr
    assert headless.stdout.startswith("NOT PAID\n")


def test_a_reason_the_server_does_not_send_leaves_the_plain_waiting_line() -> None:
    assert waiting_message(None) == "Waiting for the customer to confirm with their PIN."
    plain = render_waiting("1.00 CNY", 5.0)
    why = render_waiting("1.00 CNY", 5.0, waiting_message(COUNT_REASON))
    assert not np.array_equal(plain, why)  # the WAITING screen shows the reason
    hostile = waiting_message("\x1b[2J" + "x" * 500)
    assert hostile.startswith(WAITING + "\\x1b[2J") and len(hostile) < 240
