"""Password-free limits and step-up confirmation, on SQLite and PostgreSQL.

Each limit is tried at its boundary (limit - 1 minor unit, limit, limit + 1); above it the
charge waits in `pending_confirmation` and moves nothing until the customer confirms with the
PIN. These run the real wallet and terminal clients against the app in this process.

The confirm, decline and timeout paths also run end to end through the console scripts, over
real HTTP to a live server: the POS (`paycode-pos charge`, a process: its exit status is part
of the answer) waits while the wallet (`paycode-wallet pending`, `confirm`, `decline`, run in
this process) answers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from paycode.client import online, pending
from paycode.client.wallet import Wallet
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.database.models import Account, LedgerEntry, LedgerTransaction, Payment, User
from paycode.server.operations import admin
from paycode.shared.errors import ServerRejected, WalletError
from tests.support.servers import LiveServer, Server
from tests.support.shop import (
    PASSWORD,
    Shop,
    code_of,
    new_phone,
    new_till,
    new_user,
    ok_json,
    open_shop,
    refused,
    use_fast_keystore,
    waiting_payment,
)

PIN = "246810"
WRONG_PIN = "135790"
MERCHANT = "Step Up Store"


@pytest.fixture(autouse=True)
def _fast_wallets(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


def _customer(
    server: Server,
    home: Path,
    *,
    payment_max: str | None = None,
    daily_max: str | None = None,
    daily_count: int | None = None,
) -> tuple[str, Wallet]:
    """A fresh user with 10,000 CNY and these password-free limits (in-process, as
    `paycode-server users limits` sets them), a phone and a PIN."""
    name = new_user(server, "payer", top_up="10000.00")
    with server.session() as session:
        admin.set_limits(
            session,
            name,
            "CNY",
            payment_max=payment_max,
            daily_max=daily_max,
            daily_count_max=daily_count,
            reset=False,
        )
    wallet = new_phone(server, home / name, name, ["v2"])
    pending.set_pin(wallet, password=PASSWORD, pin=PIN)
    return name, wallet


def _pay(till: TerminalClient, wallet: Wallet, amount: str) -> dict[str, Any]:
    return till.charge(code=code_of(wallet, "v2"), amount=amount, currency="CNY")


def _balance_minor(server: Server, name: str) -> int:
    with server.session() as session:
        user_id = session.scalar(select(User.id).where(User.name == name))
        balance = session.scalar(
            select(Account.balance_minor).where(
                Account.owner_kind == "user", Account.owner_id == user_id
            )
        )
    assert balance is not None
    return int(balance)


def _entries_of(server: Server, payment_id: str) -> list[int]:
    """The ledger entries of the payment's charge transaction (none while it waits)."""
    charge = select(LedgerTransaction.id).where(LedgerTransaction.payment_id == payment_id)
    with server.session() as session:
        rows = session.scalars(
            select(LedgerEntry.amount_minor).where(LedgerEntry.transaction_id.in_(charge))
        ).all()
    return sorted(int(row) for row in rows)


def charge_once(till: TerminalClient, code: str, amount: str) -> dict[str, Any]:
    return till.charge(code=code, amount=amount, currency="CNY")


# -- each limit at its boundary --------------------------------------------------------------


def test_payment_limit_boundary(server: Server, tmp_path: Path) -> None:
    name, wallet = _customer(server, tmp_path, payment_max="10.00")
    till = new_till(server)
    assert _pay(till, wallet, "9.99")["status"] == "succeeded"
    assert _pay(till, wallet, "10.00")["status"] == "succeeded"
    before = _balance_minor(server, name)
    waiting = _pay(till, wallet, "10.01")
    assert waiting["status"] == "pending_confirmation"
    assert waiting["code"] == "confirmation_required" and waiting["confirm_by"]
    assert _balance_minor(server, name) == before  # nothing moved yet
    assert _entries_of(server, waiting["payment_id"]) == []
    assert till.payment(waiting["payment_id"])["status"] == "pending_confirmation"


def test_daily_count_boundary(server: Server, tmp_path: Path) -> None:
    _, wallet = _customer(server, tmp_path, daily_count=3)
    till = new_till(server)
    statuses = [_pay(till, wallet, "1.00")["status"] for _ in range(4)]
    assert statuses == ["succeeded"] * 3 + ["pending_confirmation"]  # 2 = limit-1, 3, 4


def test_daily_amount_boundary(server: Server, tmp_path: Path) -> None:
    _, wallet = _customer(server, tmp_path, daily_max="10.00")
    till = new_till(server)
    assert _pay(till, wallet, "6.00")["status"] == "succeeded"
    assert _pay(till, wallet, "3.99")["status"] == "succeeded"  # today 9.99: limit - 1
    assert _pay(till, wallet, "0.01")["status"] == "succeeded"  # today 10.00: the limit
    assert _pay(till, wallet, "0.01")["status"] == "pending_confirmation"  # would be 10.01
    limits = pending.limits(wallet)
    assert limits == [
        {
            "currency": "CNY",
            "payment_max": "1000.00",
            "daily_max": "10.00",
            "daily_count_max": 5,
            "today_count": 3,
            "today": "10.00",
            "custom": True,
        }
    ]


def test_operator_sets_and_resets_limits_from_the_cli(server: Server) -> None:
    name = new_user(server, "limited")
    shown = ok_json(
        server.cli_in_process("--json", "users", "limits", name, "--payment-max", "200.00",
                              "--daily-count", "0")
    )["limits"]  # fmt: skip
    assert (shown["payment_max"], shown["daily_count_max"], shown["custom"]) == ("200.00", 0, True)
    human = server.cli_in_process("users", "limits", name, "--reset")
    assert human.returncode == 0 and "server defaults" in human.stdout and "1000.00" in human.stdout
    wrong = server.cli_in_process("--json", "users", "limits", name, "--payment-max", "-1")
    assert wrong.returncode == 1
    assert json.loads(wrong.stdout)["error"]["code"] == "amount_invalid"


def test_no_code_pays_above_the_hard_ceiling(server: Server, tmp_path: Path) -> None:
    name, wallet = _customer(server, tmp_path)
    topped_up = server.cli_in_process("users", "top-up", name, "50000.00")
    assert topped_up.returncode == 0, topped_up.stderr
    till = new_till(server)
    code = code_of(wallet, "v2")
    before = _balance_minor(server, name)
    error = refused("limit_exceeded", lambda: charge_once(till, code, "50000.01"))
    assert error.status == 422
    refused("code_replayed", lambda: charge_once(till, code, "1.00"))  # burned
    assert _pay(till, wallet, "50000.00")["status"] == "pending_confirmation"
    assert _balance_minor(server, name) == before


def test_racing_charges_cannot_both_pass_the_daily_limit(server: Server, tmp_path: Path) -> None:
    _, wallet = _customer(server, tmp_path, daily_count=3, daily_max="100.00")
    till = new_till(server)
    codes = [code_of(wallet, "v2") for _ in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(
            pool.map(lambda c: till.charge(code=c, amount="20.00", currency="CNY"), codes)
        )
    statuses = sorted(reply["status"] for reply in replies)
    assert statuses == ["pending_confirmation"] * 5 + ["succeeded"] * 3
    assert pending.limits(wallet)[0]["today"] == "60.00"


# -- confirm, decline, PIN --------------------------------------------------------------------


def test_confirm_moves_the_money_once(server: Server, tmp_path: Path) -> None:
    name, wallet = _customer(server, tmp_path, payment_max="5.00")
    till = new_till(server)
    waiting = _pay(till, wallet, "80.00")
    before = _balance_minor(server, name)
    listed = pending.pending(wallet)
    assert [item["payment_id"] for item in listed] == [waiting["payment_id"]]
    assert listed[0]["amount"] == "80.00" and listed[0]["merchant"]
    refused("pin_invalid", pending.confirm, wallet, waiting["payment_id"], WRONG_PIN)
    assert till.payment(waiting["payment_id"])["status"] == "pending_confirmation"
    paid = pending.confirm(wallet, waiting["payment_id"], PIN)
    assert paid["status"] == "succeeded" and paid["amount"] == "80.00"
    assert _balance_minor(server, name) == before - 8000
    assert _entries_of(server, waiting["payment_id"]) == [-8000, 8000]
    refused("payment_not_pending", pending.confirm, wallet, waiting["payment_id"], PIN)
    assert till.cancel(waiting["payment_id"])["status"] == "succeeded"  # too late to cancel
    assert _balance_minor(server, name) == before - 8000
    assert pending.pending(wallet) == []


def test_decline_and_cancel_move_nothing(server: Server, tmp_path: Path) -> None:
    name, wallet = _customer(server, tmp_path, payment_max="5.00")
    till = new_till(server)
    declined, cancelled = _pay(till, wallet, "7.00"), _pay(till, wallet, "8.00")
    before = _balance_minor(server, name)
    said_no = pending.decline(wallet, declined["payment_id"])
    assert (said_no["status"], said_no["failure_code"]) == ("declined", "declined_by_customer")
    gave_up = till.cancel(cancelled["payment_id"])
    assert (gave_up["status"], gave_up["failure_code"]) == ("cancelled", "cancelled_by_merchant")
    for payment in (declined, cancelled):
        refused("payment_not_pending", pending.confirm, wallet, payment["payment_id"], PIN)
        assert _entries_of(server, payment["payment_id"]) == []
    assert _balance_minor(server, name) == before


def test_confirm_after_the_deadline_is_refused(server: Server, tmp_path: Path) -> None:
    name, wallet = _customer(server, tmp_path, payment_max="5.00")
    till = new_till(server)
    waiting = _pay(till, wallet, "9.00")
    with server.session() as session:
        payment = session.get(Payment, waiting["payment_id"])
        assert payment is not None
        payment.confirm_by_s = time.time() - 1
    before = _balance_minor(server, name)
    refused("confirmation_expired", pending.confirm, wallet, waiting["payment_id"], PIN)
    ended = till.payment(waiting["payment_id"])
    assert (ended["status"], ended["failure_code"]) == ("cancelled", "confirmation_expired")
    assert _balance_minor(server, name) == before


def test_confirm_without_funds_fails_and_moves_nothing(server: Server, tmp_path: Path) -> None:
    name, wallet = _customer(server, tmp_path, payment_max="5.00")
    till = new_till(server)
    first, second = _pay(till, wallet, "6000.00"), _pay(till, wallet, "6000.00")
    pending.confirm(wallet, first["payment_id"], PIN)
    error = refused("insufficient_funds", pending.confirm, wallet, second["payment_id"], PIN)
    assert error.status == 422
    assert till.payment(second["payment_id"])["failure_code"] == "insufficient_funds"
    assert _balance_minor(server, name) == 400000


def test_wrong_pins_are_throttled(server: Server, tmp_path: Path) -> None:
    _, wallet = _customer(server, tmp_path, payment_max="5.00")
    till = new_till(server)
    waiting = _pay(till, wallet, "9.00")
    for _ in range(5):
        refused("pin_invalid", pending.confirm, wallet, waiting["payment_id"], WRONG_PIN)
    blocked = refused("rate_limited", pending.confirm, wallet, waiting["payment_id"], PIN)
    assert blocked.status == 429
    assert till.payment(waiting["payment_id"])["status"] == "pending_confirmation"


def test_another_customers_payment_is_not_found(server: Server, tmp_path: Path) -> None:
    _, wallet = _customer(server, tmp_path, payment_max="5.00")
    _, stranger = _customer(server, tmp_path)
    waiting = _pay(new_till(server), wallet, "9.00")
    refused("not_found", pending.confirm, stranger, waiting["payment_id"], PIN)
    refused("not_found", pending.decline, stranger, waiting["payment_id"])
    assert pending.pending(stranger) == []


def test_a_pin_needs_the_password(server: Server, tmp_path: Path) -> None:
    _, wallet = _customer(server, tmp_path)
    refused("unauthorized", pending.set_pin, wallet, password="not it", pin="482915")
    bad = refused("invalid_request", online.signed_call, wallet, "POST", "/v1/wallet/pin",
                  {"password": PASSWORD, "pin": "12ab56"}, idempotency_key="k-bad-pin")  # fmt: skip
    assert "6 digits" in bad.message


@pytest.mark.parametrize("trivial", ["123456", "654321", "000000", "121212", "123123", "112233"])
def test_a_trivial_pin_is_refused_when_set(server: Server, tmp_path: Path, trivial: str) -> None:
    """PIN 123456 and the other first guesses were accepted as a payment PIN."""
    _, wallet = _customer(server, tmp_path)
    with pytest.raises(WalletError) as local:  # the wallet refuses before any network
        pending.set_pin(wallet, password=PASSWORD, pin=trivial)
    assert local.value.code == "pin_invalid"
    assert "attacker" in local.value.message or "run such as 123456" in local.value.message
    body = {"password": PASSWORD, "pin": trivial}
    remote = refused("invalid_request", online.signed_call, wallet, "POST", "/v1/wallet/pin",
                     body, idempotency_key=f"k-{trivial}")  # fmt: skip
    assert "PIN" in remote.message


# -- the POS and the wallet, end to end through the console scripts ---------------------------


@pytest.fixture(scope="module")
def shop(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    home = tmp_path_factory.mktemp("step-up")
    shop = open_shop(live_server, home, merchants=[MERCHANT], top_up="5000.00", in_process=True)
    shop.wallet("set-pin", "--stdin", stdin=f"{PASSWORD}\n{PIN}\n")
    yield shop


def _pos_charge(shop: Shop, code: str, amount: str, wait_s: str) -> Any:
    """`paycode-pos charge` as a process, which may wait while this thread is the customer."""
    return shop.spawn_pos(
        "charge", "--amount", amount, "--source", "stdin", "--confirm-wait-s", wait_s,
        stdin=code + "\n",
    )  # fmt: skip


def test_pos_waits_while_the_customer_confirms(shop: Shop) -> None:
    before = shop.balance()
    with ThreadPoolExecutor(max_workers=1) as pool:
        till = pool.submit(_pos_charge, shop, shop.code("v1"), "1200.00", "60")
        payment_id = waiting_payment(lambda: shop.wallet("pending")["items"], till)
        confirmed = shop.wallet("confirm", payment_id, "--stdin", stdin=PIN + "\n")
        done = till.result()
    assert confirmed["payment"]["status"] == "succeeded"
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["paid"] is True and outcome["payment"]["payment_id"] == payment_id
    assert "waiting for the customer to confirm" in done.stderr.lower()
    assert float(shop.balance()) == pytest.approx(float(before) - 1200.00)


def test_pos_reports_a_decline(shop: Shop) -> None:
    before = shop.balance()
    with ThreadPoolExecutor(max_workers=1) as pool:
        till = pool.submit(_pos_charge, shop, shop.code("v1"), "1500.00", "60")
        waiting_payment(lambda: shop.wallet("pending")["items"], till)
        declined = shop.wallet("decline")  # the one waiting payment
        done = till.result()
    assert declined["payment"]["status"] == "declined"
    assert done.returncode == 3, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["paid"] is False and outcome["code"] == "declined_by_customer"
    assert "declined" in outcome["message"]
    assert shop.balance() == before


def test_pos_cancels_after_its_wait(shop: Shop) -> None:
    before = shop.balance()
    done = _pos_charge(shop, shop.code("v1"), "1300.00", "1")  # nobody confirms: cancelled
    assert done.returncode == 3, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["code"] == "cancelled_by_merchant" and outcome["paid"] is False
    payment_id = outcome["payment"]["payment_id"]
    late = shop.wallet_raw("confirm", payment_id, "--stdin", stdin=PIN + "\n")
    assert late.returncode == 1
    assert json.loads(late.stdout)["error"]["code"] == "payment_not_pending"
    assert shop.balance() == before
    assert shop.wallet("pending")["items"] == []


def test_server_rejections_are_typed(server: Server, tmp_path: Path) -> None:
    _, wallet = _customer(server, tmp_path)
    with pytest.raises(ServerRejected) as caught:
        online.signed_call(
            wallet, "POST", "/v1/wallet/payments/pay_0000000000000000/confirm",
            {"pin": "12"}, idempotency_key="k-short-pin",
        )  # fmt: skip
    assert caught.value.code == "invalid_request" and caught.value.status == 400
