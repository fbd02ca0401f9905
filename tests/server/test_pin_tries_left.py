"""A wrong PIN says how many tries are left before the pause (issue 19, item 18): in the
problem's detail, which the wallet CLI prints, and as a `tries_left` member for programs. On
SQLite and PostgreSQL, through the real wallet client and CLI against the app in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from paycode.client import keystore, pending
from paycode.client.wallet import Wallet
from paycode.server.charge import step_up
from paycode.shared.errors import ServerRejected
from tests.support.servers import Server, run_in_process
from tests.support.shop import (
    PASSPHRASE,
    WALLET_MODULE,
    charge_waiting_for_pin,
    person_env,
    refused,
    use_fast_keystore,
)
from tests.support.wallet_server import intercepted

PIN = "246810"
WRONG_PIN = "135790"


@pytest.fixture(autouse=True)
def _fast_wallets(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


def _waiting(server: Server, home: Path) -> tuple[Wallet, str]:
    """A customer whose 9.00 charge waits for the PIN (password-free up to 5.00)."""
    _, wallet, payment_id = charge_waiting_for_pin(server, home, "tries", PIN)
    return wallet, payment_id


def _wrong_pin_problem(server: Server, wallet: Wallet, payment_id: str) -> dict[str, Any]:
    with intercepted(server) as exchanges:
        refused("pin_invalid", pending.confirm, wallet, payment_id, WRONG_PIN)
    problem: dict[str, Any] = json.loads(exchanges[-1].reply.body)
    return problem


def test_a_wrong_pin_says_how_many_tries_are_left(server: Server, tmp_path: Path) -> None:
    """Before the fix: "the PIN is not right", nothing about what is left."""
    wallet, payment_id = _waiting(server, tmp_path)
    for left in range(step_up.PIN_FAILURES_MAX - 1, 0, -1):
        problem = _wrong_pin_problem(server, wallet, payment_id)
        assert problem["tries_left"] == left, problem
        plural = "try" if left == 1 else "tries"
        assert f"{left} {plural} left before a 5-minute pause" in problem["detail"], problem
    last = _wrong_pin_problem(server, wallet, payment_id)
    assert last["tries_left"] == 0, last
    assert "paused for 5 minutes" in last["detail"], last
    blocked = refused("rate_limited", pending.confirm, wallet, payment_id, PIN)
    assert "too many wrong PINs" in blocked.message


def test_a_right_pin_gives_its_try_back(server: Server, tmp_path: Path) -> None:
    wallet, payment_id = _waiting(server, tmp_path)
    assert _wrong_pin_problem(server, wallet, payment_id)["tries_left"] == 4
    with pytest.raises(ServerRejected):  # a right PIN, then the payment is no longer pending
        pending.confirm(wallet, "pay_0000000000000000", PIN)
    assert _wrong_pin_problem(server, wallet, payment_id)["tries_left"] == 3


def test_the_wallet_cli_shows_the_tries_left(server: Server, tmp_path: Path) -> None:
    wallet, payment_id = _waiting(server, tmp_path)
    env = person_env() | {keystore.PASSPHRASE_ENV: PASSPHRASE}
    done = run_in_process(
        WALLET_MODULE, env, "--home", str(wallet.home), "confirm", payment_id, "--stdin",
        stdin=WRONG_PIN + "\n",
    )  # fmt: skip
    assert done.returncode != 0
    assert "4 tries left before a 5-minute pause" in done.stdout + done.stderr, done
