"""Offline on both sides, with real processes (docs/offline.md §8, issue 21's acceptance):
the server is stopped, tills (`paycode-pos charge` processes) accept offline codes within their
limits and refuse beyond them, one is killed with SIGKILL in the middle of a sale, the server
comes back on the same address, the tills sync, and the books are exactly what the arithmetic
says. And the attack the design bounds: one allowance cloned onto two wallets and spent at two
offline tills; after sync the loss is the formula of docs/offline.md §7, the device is locked,
and no account but escrow, the merchants', the loss account and the shortfall moved.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from paycode.client.wallet import Wallet
from paycode.server.charge import step_up
from paycode.server.database.models import SYSTEM, Device, User
from paycode.server.database.offline_models import (
    ESCROW,
    LOSS,
    SHORTFALL_OWNER,
    OfflineAcceptance,
    OfflineAllowance,
)
from paycode.server.testing import LiveServer, run_command
from paycode.shared.errors import ServerRejected
from paycode.shared.money import parse_amount
from tests.endtoend.till_process import TillProcess
from tests.support.books import assert_books_clean, balances
from tests.support.servers import BACKEND_PARAMS, run_in_process, started
from tests.support.shop import (
    POS_MODULE,
    WALLET_MODULE,
    Merchant,
    code_of,
    new_merchant,
    new_phone,
    new_user,
    person_env,
    use_fast_keystore,
    wallet_env,
)

PIN = "246810"
ALLOWANCE = "200.00"
"""Four certificates of T = 50.00; p = min(T, 100.00) = 50.00; n = 16 (the defaults)."""
FLOOR = "30.00"
PROCESS_WAIT_S = 60.0


@pytest.fixture(autouse=True)
def _fast_keystore(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


@pytest.fixture(params=BACKEND_PARAMS)
def live(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    """A server of this test's own: it is stopped and started again."""
    with started(request.param, "process") as server:
        assert isinstance(server, LiveServer)
        yield server


@pytest.fixture
def live_pg() -> Iterator[LiveServer]:
    """The clone test's own PostgreSQL server: its arithmetic is the same on SQLite, where
    tests/charge/test_offline_settlement.py checks it in-process; here the processes and the
    database where two tills' syncs really run side by side."""
    with started("postgres", "process") as server:
        assert isinstance(server, LiveServer)
        yield server


def minor(amount: str) -> int:
    return parse_amount(amount, "CNY").amount_minor


def run(
    module: str, args: list[str], env: dict[str, str], stdin: str, *, own_process: bool
) -> subprocess.CompletedProcess[str]:
    """The console script as a process of its own, or its main() in this one (the same code,
    a second sooner: see run_in_process) where the process itself proves nothing."""
    if not own_process:
        return run_in_process(module, env, *args, stdin=stdin)
    return run_command([sys.executable, "-m", module, *args], env, stdin)


def wallet_json(home: Path, *args: str, stdin: str = "") -> dict[str, Any]:
    """`paycode-wallet --json ...`, in this process: the till and the server are the processes
    this test is about."""
    args_ = ["--home", str(home), "--json", *args]
    done = run(WALLET_MODULE, args_, wallet_env(), stdin, own_process=False)
    assert done.returncode == 0, done.stdout + done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def offline_code(home: Path, amount: str | None = None) -> str:
    extra = [] if amount is None else ["--amount", amount]
    return str(wallet_json(home, "code", "--offline", *extra)["code"])


def pos(
    home: Path, *args: str, stdin: str = "", own_process: bool = True
) -> subprocess.CompletedProcess[str]:
    env = person_env() | {"PAYCODE_POS_HOME": str(home)}
    return run(POS_MODULE, ["--json", *args], env, stdin, own_process=own_process)


def configured_till(
    live: LiveServer, merchant: Merchant, home: Path, *, own_process: bool = True
) -> Path:
    """`paycode-pos configure` as a cashier runs it: it also fetches the offline keys."""
    done = pos(
        home,
        "configure", "--server", live.url, "--key-id", merchant.key_id, "--secret-stdin",
        stdin=base64.b64encode(merchant.secret).decode() + "\n", own_process=own_process,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return home


def sell(
    till: Path, code: str, amount: str, *, own_process: bool = True
) -> tuple[int, dict[str, Any]]:
    args = ("charge", "--amount", amount, "--source", "stdin")
    done = pos(till, *args, stdin=code + "\n", own_process=own_process)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def customer(live: LiveServer, home: Path, top_up: str) -> tuple[str, Wallet]:
    """A user with `top_up` and a PIN, and a wallet enrolled on v3 that took ALLOWANCE with
    `paycode-wallet offline take` (a process)."""
    user = new_user(live, "offline", top_up=top_up)
    with live.session() as session:
        user_id = session.scalars(select(User.id).where(User.name == user)).one()
        step_up.set_pin(session, user_id, PIN)
    wallet = new_phone(live, home, user, ["v3"])
    taken = wallet_json(home, "offline", "take", "--amount", ALLOWANCE, "--pin-stdin", stdin=PIN)
    assert taken["allowance"]["allowance_id"].startswith("alw_")
    return user_id, wallet


def accepted_in_log(till: Path) -> dict[str, int]:
    """Acceptance id -> amount of every `accept` record the till's log holds."""
    lines = (till / "offline" / "acceptances.log").read_bytes().splitlines()
    records = [json.loads(line) for line in lines if line]
    return {r["id"]: r["amount_minor"] for r in records if r["kind"] == "accept"}


def test_outage_crash_and_sync_balance_exactly(live: LiveServer, tmp_path: Path) -> None:
    merchant = new_merchant(live, "OfflineCafe")
    floor = live.cli_in_process("merchants", "update", merchant.name, "--offline-floor", FLOOR)
    assert floor.returncode == 0, floor.stdout + floor.stderr
    user_id, _wallet = customer(live, tmp_path / "phone", top_up="300.00")
    till = configured_till(live, merchant, tmp_path / "till")
    phone = tmp_path / "phone"
    live.stop()  # the shop's line is down from here

    first = offline_code(phone, "12.50")
    status, sale = sell(till, first, "12.50")
    assert (status, sale["outcome"]) == (0, "paid_offline"), sale
    assert sale["acceptance_id"].startswith("acc_")
    status, again = sell(till, first, "12.50")
    assert (status, again["outcome"], again["code"]) == (3, "not_paid", "code_replayed")
    status, above = sell(till, offline_code(phone), "35.00")  # above the floor of 30.00
    assert (status, above["code"]) == (3, "offline_limit")
    status, v3 = sell(till, str(wallet_json(phone, "code", "--version", "v3")["code"]), "5.00")
    assert (status, v3["code"]) == (3, "server_unreachable")
    status, second = sell(till, offline_code(phone, "20.00"), "20.00")
    assert (status, second["outcome"]) == (0, "paid_offline")

    killed_code = offline_code(phone, "7.00")
    delay_s = random.uniform(0.0, 0.8)
    with TillProcess.start(till, "--amount", "7.00", "--source", "stdin") as killed:
        killed.wait_for_line("PAY 7.00")
        killed.type_code(killed_code)
        time.sleep(delay_s)
        killed.signal(signal.SIGKILL)
        killed.process.wait(timeout=PROCESS_WAIT_S)
    restarted = pos(till, "offline", "status")
    told = restarted.stdout + restarted.stderr
    assert restarted.returncode == 0, told
    logged = accepted_in_log(till)
    acknowledged = len(logged) == 3
    assert len(logged) in (2, 3), (delay_s, logged)  # acknowledged, or never was
    if "(recovered)" in told:
        assert acknowledged and "PAID OFFLINE (recovered) 7.00" in told, (delay_s, told)
    if "interrupted sale" in told:
        assert not acknowledged, (delay_s, told)
    # The customer shows the same code again: paid once, whichever moment the kill hit.
    status, shown_again = sell(till, killed_code, "7.00")
    if acknowledged:
        assert (status, shown_again["code"]) == (3, "code_replayed"), (delay_s, shown_again)
    else:
        assert (status, shown_again["outcome"]) == (0, "paid_offline"), (delay_s, shown_again)
    logged = accepted_in_log(till)
    assert sorted(logged.values()) == [minor("7.00"), minor("12.50"), minor("20.00")]

    live.restart(mode="run" if live.backend == "sqlite" else "serve", workers=2)
    synced = pos(till, "sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert pos(till, "sync").returncode == 0  # nothing left: a second run moves nothing

    expected_paid = sum(logged.values())
    after = balances(live)
    with live.session() as session:
        allowance = session.scalars(
            select(OfflineAllowance).where(OfflineAllowance.user_id == user_id)
        ).one()
        results = session.scalars(
            select(OfflineAcceptance.result).where(
                OfflineAcceptance.merchant_id == merchant.merchant_id
            )
        ).all()
    assert sorted(results) == ["paid"] * len(logged)
    assert after[("user", user_id)] == minor("300.00") - minor(ALLOWANCE)
    assert after[(ESCROW, allowance.id)] == minor(ALLOWANCE) - expected_paid
    assert after[("merchant", merchant.merchant_id)] == expected_paid
    assert (LOSS, merchant.merchant_id) not in after
    assert_books_clean(live)


@pytest.mark.postgres
def test_cloned_allowance_two_tills_loss_is_formula(live_pg: LiveServer, tmp_path: Path) -> None:
    live = live_pg
    shops = [new_merchant(live, "CloneShopA"), new_merchant(live, "CloneShopB")]
    user_id, wallet = customer(live, tmp_path / "phone", top_up="250.00")
    clone = tmp_path / "clone"
    shutil.copytree(tmp_path / "phone", clone)  # the whole keystore: what a copied phone holds
    tills = [
        configured_till(live, shop, tmp_path / f"till{n}", own_process=False)
        for n, shop in enumerate(shops)
    ]
    before = balances(live)
    live.stop()

    cap = "50.00"  # T = p = 50.00: each code spends one whole certificate
    for phone, till in ((tmp_path / "phone", tills[0]), (clone, tills[1])):
        for _certificate in range(4):
            status, sale = sell(till, offline_code(phone, cap), cap, own_process=False)
            assert (status, sale["outcome"]) == (0, "paid_offline"), sale

    live.restart(mode="run" if live.backend == "sqlite" else "serve", workers=2)
    assert pos(tills[0], "sync", own_process=False).returncode == 0  # paid in full: first
    short = pos(tills[1], "sync", own_process=False)
    assert short.returncode == 5, short.stdout + short.stderr  # forwarded, some not paid

    k, c, t_minor = 2, 4, minor(cap)
    v_minor = t_minor  # V = min(T, n * min(p, F)) = T here
    escrow_minor = minor(ALLOWANCE)
    loss_formula_minor = k * c * v_minor - escrow_minor  # accepted - what escrow held
    assert loss_formula_minor <= c * (k * v_minor - t_minor)  # docs/offline.md §7, b = T

    after = balances(live)
    with live.session() as session:
        allowance = session.scalars(
            select(OfflineAllowance).where(OfflineAllowance.user_id == user_id)
        ).one()
        device = session.get(Device, allowance.device_id)
        user = session.get(User, user_id)
        assert device is not None and device.revoked_at_s is not None
        assert user is not None and user.offline_blocked_at_s is not None
    changed = {
        owner for owner in after.keys() | before.keys() if after.get(owner) != before.get(owner)
    }
    a, b = (shop.merchant_id for shop in shops)
    assert changed == {
        (ESCROW, allowance.id),
        ("merchant", a),
        (LOSS, b),
        (SYSTEM, SHORTFALL_OWNER),
    }
    assert after[(ESCROW, allowance.id)] == 0
    assert after[("merchant", a)] - before.get(("merchant", a), 0) == escrow_minor
    assert after[(LOSS, b)] == loss_formula_minor
    assert after[(SYSTEM, SHORTFALL_OWNER)] == -loss_formula_minor
    assert after[("user", user_id)] == before[("user", user_id)]
    assert_books_clean(live)
    # The locked phone's codes are refused in every version, not only offline.
    with pytest.raises(ServerRejected) as refused:
        shops[0].till_at(live.url).charge(code=code_of(wallet, "v3"), amount="1.00", currency="CNY")
    assert refused.value.code == "device_revoked"
