"""Points mandates (docs/spec.md §16), on SQLite and PostgreSQL, over real HTTP and the real
ledger: a user binds a merchant with a signed consent, the merchant redeems points (and money
for the rest) by a signed, idempotent call, within each cap and never after a revocation;
refunds of each leg, the settlement file and a clean `reconcile` after all of it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from paycode.client import mandates, online
from paycode.client.history_text import history_line
from paycode.client.wallet import Wallet
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.books import ledger
from paycode.server.config import ServerConfig
from paycode.server.database.models import Payment
from paycode.server.database.points_models import POINTS_MERCHANT, POINTS_USER, PointsMandate
from paycode.server.operations import admin
from paycode.server.points import redemption
from paycode.shared import wallet_auth
from paycode.shared.errors import AmountInvalid, ServerRejected
from paycode.shared.money import currency, parse_amount
from paycode.shared.points import POINTS_ASSET, Consent, consent_message
from tests.support.servers import Server, all_at_once
from tests.support.shop import (
    Merchant,
    new_merchant,
    new_phone,
    new_user,
    refused,
    unique,
    use_fast_keystore,
)

DAY_S = 86_400


@pytest.fixture(autouse=True)
def _fast_keystore(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


@dataclass
class Customer:
    name: str
    user_id: str
    wallet: Wallet
    merchant: Merchant

    @property
    def till(self) -> TerminalClient:
        return self.merchant.till


def _customer(server: Server, home: Path, *, points: int = 1000, money: str = "100.00") -> Customer:
    name = new_user(server, "pts", top_up=money)
    with server.session() as session:
        user_id = admin.find_user(session, name).id
        redemption.grant(session, user_id, points, time.time())
    wallet = new_phone(server, home / name, name, ["v2"])
    return Customer(name, user_id, wallet, new_merchant(server, "Shop"))


def _bind(
    customer: Customer,
    *,
    per_payment: int = 500,
    per_day: int = 800,
    rate: tuple[int, int] = (100, 100),
) -> str:
    reply = mandates.bind(
        customer.wallet,
        merchant_id=customer.merchant.merchant_id,
        currency="CNY",
        rate=rate,
        per_payment_points=per_payment,
        per_day_points=per_day,
        expires_in_days=30,
        reference="member-42",
    )
    assert reply["status"] == "active"
    return str(reply["mandate_id"])


def _redeem(customer: Customer, mandate_id: str, amount: str, points: int, **extra: Any) -> Any:
    return customer.till.redeem_points(
        mandate_id=mandate_id,
        merchant_order_id=extra.pop("order_id", unique("order")),
        amount=amount,
        currency="CNY",
        points=points,
        **extra,
    )


def _balances(server: Server, customer: Customer) -> dict[str, int]:
    """Points and CNY of the user and the merchant, from the ledger's accounts."""
    with server.session() as session:
        found = {}
        for name, kind, owner, asset in (
            ("user_points", POINTS_USER, customer.user_id, POINTS_ASSET),
            ("merchant_points", POINTS_MERCHANT, customer.merchant.merchant_id, POINTS_ASSET),
            ("user_minor", "user", customer.user_id, "CNY"),
            ("merchant_minor", "merchant", customer.merchant.merchant_id, "CNY"),
        ):
            account = ledger.account(session, kind, owner, asset)
            found[name] = 0 if account is None else account.balance_minor
        return found


def _mandate(server: Server, mandate_id: str) -> PointsMandate:
    with server.session() as session:
        row = session.get(PointsMandate, mandate_id)
        assert row is not None
        return row


def _consent_body(
    customer: Customer, sign_over: dict[str, Any] | None = None, **changes: Any
) -> dict[str, Any]:
    """A binding body with `changes`, signed over its own consent, or over that consent with
    `sign_over` applied (what an altered request looks like)."""
    enrollment = customer.wallet.enrollment()
    consent = Consent(
        merchant_id=customer.merchant.merchant_id,
        currency="CNY",
        rate_points=100,
        rate_minor=100,
        cap_per_payment_points=500,
        cap_per_day_points=800,
        expires_at_s=int(time.time()) + 30 * DAY_S,
        device_id=enrollment.device_id,
    )
    consent = replace(consent, **changes)
    signed_as = replace(consent, **(sign_over or {}))
    body = {
        "merchant_id": consent.merchant_id,
        "asset": consent.asset,
        "currency": consent.currency,
        "rate_points": consent.rate_points,
        "rate_minor": consent.rate_minor,
        "cap_per_payment_points": consent.cap_per_payment_points,
        "cap_per_day_points": consent.cap_per_day_points,
        "expires_at_s": consent.expires_at_s,
        "reference": consent.reference,
        "signature": wallet_auth.sign(enrollment.credential, consent_message(signed_as)),
    }
    return body


def _post_binding(customer: Customer, body: dict[str, Any]) -> dict[str, Any]:
    key = str(uuid.uuid4())
    reply = online.signed_call(
        customer.wallet, "POST", "/v1/wallet/mandates", body, idempotency_key=key
    )
    return reply.body


# -- binding -----------------------------------------------------------------------------------


def test_binding_is_listed_for_the_user_and_the_merchant(server: Server, tmp_path: Path) -> None:
    customer = _customer(server, tmp_path)
    mandate_id = _bind(customer)
    (mine,) = mandates.mandates(customer.wallet)
    assert mine["mandate_id"] == mandate_id and mine["status"] == "active"
    assert mine["rate_points"] == 100 and mine["rate_minor"] == 100
    assert (mine["cap_per_payment_points"], mine["cap_per_day_points"]) == (500, 800)
    assert (mine["used_today_points"], mine["left_today_points"]) == (0, 800)
    assert mine["merchant"] == customer.merchant.name and mine["reference"] == "member-42"
    (theirs,) = customer.till.points_mandates()["items"]
    assert theirs == mine
    assert customer.till.points_mandates(reference="member-42")["items"] == [mine]
    assert customer.till.points_mandates(reference="member-43")["items"] == []
    row = _mandate(server, mandate_id)
    assert row.consent.startswith("paycode-mandate/1\n")
    assert json.loads(row.consent.partition("\n")[2])["device_id"] == row.device_id
    assert row.signature not in json.dumps(mine)  # evidence kept, never shown


def test_binding_refusals_store_nothing(server: Server, tmp_path: Path) -> None:
    customer = _customer(server, tmp_path)
    wallet = customer.wallet
    refused(
        "mandate_signature_invalid",
        _post_binding,
        customer,
        _consent_body(customer, sign_over={"cap_per_day_points": 100}),
    )
    refused("not_found", _post_binding, customer, _consent_body(customer, merchant_id="mch_nobody"))
    refused(
        "mandate_invalid",
        _post_binding,
        customer,
        _consent_body(customer, cap_per_payment_points=900, cap_per_day_points=800),
    )
    refused("mandate_invalid", _post_binding, customer, _consent_body(customer, rate_points=0))
    refused(
        "mandate_invalid",
        _post_binding,
        customer,
        _consent_body(customer, expires_at_s=int(time.time()) - 1),
    )
    refused(
        "mandate_invalid",
        _post_binding,
        customer,
        _consent_body(customer, expires_at_s=int(time.time()) + 800 * DAY_S),
    )
    refused("currency_mismatch", _post_binding, customer, _consent_body(customer, currency="USD"))
    assert mandates.mandates(wallet) == []
    assert customer.till.points_mandates()["items"] == []


def test_points_are_never_money(server: Server, tmp_path: Path) -> None:
    with pytest.raises(AmountInvalid):
        currency(POINTS_ASSET)
    with pytest.raises(AmountInvalid):
        parse_amount("1", POINTS_ASSET)
    customer = _customer(server, tmp_path, points=250)
    body = online.balance(customer.wallet)
    assert body["points"] == {"asset": POINTS_ASSET, "balance": 250}
    assert [item["currency"] for item in body["accounts"]] == ["CNY"]


# -- redemption --------------------------------------------------------------------------------


def test_mixed_payment_moves_both_legs_exactly(server: Server, tmp_path: Path) -> None:
    customer = _customer(server, tmp_path)
    mandate_id = _bind(customer)
    before = _balances(server, customer)
    order_id = unique("order")
    paid = _redeem(customer, mandate_id, "10.00", 300, order_id=order_id)
    assert paid["status"] == "succeeded" and paid["amount_minor"] == 1000
    assert paid["points"] == {
        "mandate_id": mandate_id,
        "asset": POINTS_ASSET,
        "points": 300,
        "refunded_points": 0,
        "value": "3.00",
        "value_minor": 300,
        "money": "7.00",
        "money_minor": 700,
    }
    after = _balances(server, customer)
    assert after["user_points"] == before["user_points"] - 300
    assert after["merchant_points"] == before["merchant_points"] + 300
    assert after["user_minor"] == before["user_minor"] - 700
    assert after["merchant_minor"] == before["merchant_minor"] + 700
    (listed,) = customer.till.payments_by_order(order_id)
    assert listed["payment_id"] == paid["payment_id"] and listed["points"]["points"] == 300
    (mine,) = mandates.mandates(customer.wallet)
    assert (mine["used_today_points"], mine["left_today_points"]) == (300, 500)


def test_points_only_payment_moves_no_money(server: Server, tmp_path: Path) -> None:
    customer = _customer(server, tmp_path)
    mandate_id = _bind(customer, rate=(10, 1))  # 10 points = 0.01 CNY
    before = _balances(server, customer)
    paid = _redeem(customer, mandate_id, "0.50", 500)
    assert paid["points"]["money_minor"] == 0 and paid["points"]["value"] == "0.50"
    after = _balances(server, customer)
    assert after["user_minor"] == before["user_minor"]
    assert after["user_points"] == before["user_points"] - 500


def test_caps_per_payment_and_per_day(server: Server, tmp_path: Path) -> None:
    customer = _customer(server, tmp_path, points=5000)
    mandate_id = _bind(customer, per_payment=500, per_day=800)
    refused("mandate_payment_cap", _redeem, customer, mandate_id, "10.00", 501)
    _redeem(customer, mandate_id, "10.00", 500)
    refused("mandate_day_cap", _redeem, customer, mandate_id, "10.00", 301)
    _redeem(customer, mandate_id, "10.00", 300)  # exactly the day's cap
    refused("mandate_day_cap", _redeem, customer, mandate_id, "10.00", 1)
    assert _mandate(server, mandate_id).day_used_points == 800
    # The next day starts from zero: the core with tomorrow's clock, on the real database.
    tomorrow_s = time.time() + DAY_S
    with server.session() as session:
        day = server_day(server, tomorrow_s)
        status, paid = redemption.redeem(
            session,
            customer.merchant.merchant_id,
            customer.merchant.key_id,
            {
                "mandate_id": mandate_id,
                "merchant_order_id": unique("order"),
                "amount": "9.00",
                "currency": "CNY",
                "points": 500,
            },
            now_s=tomorrow_s,
            day=day,
        )
    assert status == 201 and paid["points"]["points"] == 500
    row = _mandate(server, mandate_id)
    assert (row.day_used_points, row.used_points) == (500, 1300)


def server_day(server: Server, now_s: float) -> int:
    """The day number the server counts caps by (its PAYCODE_LIMIT_DAY_OFFSET_MINUTES)."""
    return ServerConfig.from_env(server.env).limits.day(now_s)


def test_refusals_move_nothing(server: Server, tmp_path: Path) -> None:
    customer = _customer(server, tmp_path, points=100, money="1.00")
    mandate_id = _bind(customer, rate=(3, 1))
    before = _balances(server, customer)
    refused("points_invalid", _redeem, customer, mandate_id, "10.00", 100)  # 33.33 fen
    refused("points_invalid", _redeem, customer, mandate_id, "0.01", 6)  # worth more
    refused("points_invalid", _redeem, customer, mandate_id, "10.00", 0)
    refused("insufficient_points", _redeem, customer, mandate_id, "10.00", 300)
    refused("insufficient_funds", _redeem, customer, mandate_id, "10.00", 99)  # 9.67 in money
    refused("currency_mismatch", customer.till.redeem_points, mandate_id=mandate_id,
            merchant_order_id=unique("o"), amount="1.00", currency="USD", points=3)  # fmt: skip
    other = new_merchant(server, "Other")
    refused("not_found", other.till.redeem_points, mandate_id=mandate_id,
            merchant_order_id=unique("o"), amount="1.00", currency="CNY", points=3)  # fmt: skip
    assert _balances(server, customer) == before
    row = _mandate(server, mandate_id)
    assert (row.day_used_points, row.used_points) == (0, 0)  # the refused deductions rolled back


def test_revoked_and_expired_mandates_refuse(server: Server, tmp_path: Path) -> None:
    customer = _customer(server, tmp_path)
    mandate_id = _bind(customer)
    revoked = mandates.revoke(customer.wallet, mandate_id)
    assert revoked["status"] == "revoked" and revoked["revoked_at_s"] is not None
    again = mandates.revoke(customer.wallet, mandate_id)  # idempotent, even with a new key
    assert again["revoked_at_s"] == revoked["revoked_at_s"]
    refused("mandate_revoked", _redeem, customer, mandate_id, "5.00", 100)
    assert customer.till.points_mandates()["items"] == []
    assert [item["status"] for item in mandates.mandates(customer.wallet)] == ["revoked"]
    refused("not_found", mandates.revoke, customer.wallet, "mdt_nobody")
    expiring = _bind(customer)
    with server.session() as session:
        session.execute(
            update(PointsMandate)
            .where(PointsMandate.id == expiring)
            .values(expires_at_s=time.time() - 1)
        )
    refused("mandate_expired", _redeem, customer, expiring, "5.00", 100)
    statuses = {item["mandate_id"]: item["status"] for item in mandates.mandates(customer.wallet)}
    assert statuses == {mandate_id: "revoked", expiring: "expired"}


def test_idempotent_retry_pays_once(server: Server, tmp_path: Path) -> None:
    customer = _customer(server, tmp_path)
    mandate_id = _bind(customer)
    before = _balances(server, customer)
    key, order_id = str(uuid.uuid4()), unique("order")
    first = _redeem(customer, mandate_id, "10.00", 200, order_id=order_id, idempotency_key=key)
    retry = _redeem(customer, mandate_id, "10.00", 200, order_id=order_id, idempotency_key=key)
    assert retry["payment_id"] == first["payment_id"]
    after = _balances(server, customer)
    assert after["user_points"] == before["user_points"] - 200
    assert after["user_minor"] == before["user_minor"] - 800
    refused(
        "idempotency_conflict",
        _redeem, customer, mandate_id, "10.00", 300, order_id=order_id, idempotency_key=key,
    )  # fmt: skip
    refused("duplicate_order", _redeem, customer, mandate_id, "10.00", 200, order_id=order_id)
    assert _balances(server, customer) == after
    assert _mandate(server, mandate_id).used_points == 200
    assert len(customer.till.payments_by_order(order_id)) == 1


# -- refunds -----------------------------------------------------------------------------------


def test_refunds_of_each_leg(server: Server, tmp_path: Path) -> None:
    customer = _customer(server, tmp_path)
    mandate_id = _bind(customer)
    paid = _redeem(customer, mandate_id, "10.00", 300)  # 3.00 in points, 7.00 in money
    payment_id = paid["payment_id"]
    before = _balances(server, customer)
    points_back = customer.till.refund_points(payment_id, points=100)
    assert points_back["points"] == 100 and points_back["points_refund_id"].startswith("prf_")
    assert "refund_id" not in points_back
    money_back = customer.till.refund_points(payment_id, amount="2.00")
    assert money_back["amount"] == "2.00" and "points_refund_id" not in money_back
    after = _balances(server, customer)
    assert after["user_points"] == before["user_points"] + 100
    assert after["merchant_points"] == before["merchant_points"] - 100
    assert after["user_minor"] == before["user_minor"] + 200
    refused("refund_exceeds_payment", customer.till.refund_points, payment_id, points=201)
    refused("refund_exceeds_payment", customer.till.refund_points, payment_id, amount="5.01")
    rest = customer.till.refund_points(payment_id)  # the rest of both legs
    assert (rest["points"], rest["amount"]) == (200, "5.00")
    told = rest["payment"]
    assert told["refunded"] == "7.00" and told["points"]["refunded_points"] == 300
    assert _balances(server, customer)["user_points"] == before["user_points"] + 300
    refused("refund_exceeds_payment", customer.till.refund_points, payment_id)
    (mine,) = mandates.mandates(customer.wallet)
    assert mine["used_today_points"] == 300  # a refund does not give the day's cap back


def test_refunded_points_are_whole_and_exact_at_the_rate(server: Server, tmp_path: Path) -> None:
    customer = _customer(server, tmp_path)
    mandate_id = _bind(customer)
    paid = _redeem(customer, mandate_id, "10.00", 500)
    refused("points_invalid", customer.till.refund_points, paid["payment_id"], points=0)
    assert customer.till.payment(paid["payment_id"])["points"]["refunded_points"] == 0
    thirds = _bind(customer, rate=(3, 1))  # 3 points = 0.01 CNY
    paid = _redeem(customer, thirds, "1.00", 300)
    refused("points_invalid", customer.till.refund_points, paid["payment_id"], points=100)
    assert customer.till.refund_points(paid["payment_id"], points=99)["points"] == 99
    assert customer.till.refund_points(paid["payment_id"])["points"] == 201  # the exact rest


# -- the race with revocation -------------------------------------------------------------------


def test_revocation_racing_deductions(server: Server, tmp_path: Path) -> None:
    """Eight redemptions and the revocation at once: each redemption either happened (and the
    merchant finds it by its order id) or was refused as revoked; the mandate counts exactly
    the ones that happened; after the revocation's answer nothing passes."""
    customer = _customer(server, tmp_path, points=10_000)
    mandate_id = _bind(customer, per_payment=100, per_day=5000)
    before = _balances(server, customer)
    orders = [unique("race") for _ in range(8)]

    def redeem(order_id: str) -> Callable[[], Any]:
        def call() -> Any:
            try:
                return _redeem(customer, mandate_id, "2.00", 100, order_id=order_id)
            except ServerRejected as error:
                return error.code

        return call

    def revoke() -> Any:
        return mandates.revoke(customer.wallet, mandate_id)

    outcomes = all_at_once([*map(redeem, orders), revoke])
    assert outcomes[-1]["status"] == "revoked"
    succeeded = [
        order for order, got in zip(orders, outcomes, strict=False) if isinstance(got, dict)
    ]
    for order, got in zip(orders, outcomes, strict=False):
        listed = customer.till.payments_by_order(order)
        if isinstance(got, dict):
            assert [item["payment_id"] for item in listed] == [got["payment_id"]]
        else:
            assert got == "mandate_revoked" and listed == []
    after = _balances(server, customer)
    assert after["user_points"] == before["user_points"] - 100 * len(succeeded)
    assert after["user_minor"] == before["user_minor"] - 100 * len(succeeded)
    assert _mandate(server, mandate_id).used_points == 100 * len(succeeded)
    refused("mandate_revoked", _redeem, customer, mandate_id, "2.00", 100)


# -- the books ---------------------------------------------------------------------------------


def test_settlement_and_reconcile_after_everything(server: Server, tmp_path: Path) -> None:
    customer = _customer(server, tmp_path)
    mandate_id = _bind(customer)
    mixed = _redeem(customer, mandate_id, "10.00", 300)
    points_only = _redeem(customer, mandate_id, "1.00", 100)
    customer.till.refund_points(mixed["payment_id"], points=50, amount="1.00")
    with server.session() as session:
        rows = session.scalars(
            select(PointsMandate.id).where(
                PointsMandate.merchant_id == customer.merchant.merchant_id
            )
        ).all()
    assert rows == [mandate_id]
    done = server.cli_in_process("--json", "reconcile")
    report = json.loads(done.stdout)
    assert done.returncode == 0, report["mismatches"]
    assert report["summary"]["sums_minor"][POINTS_ASSET] == 0
    today = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 8 * 3600))
    settled = server.cli_in_process(
        "--json", "settlement", "--merchant", customer.merchant.merchant_id, "--date", today
    )
    assert settled.returncode == 0, settled.stdout + settled.stderr
    answer = json.loads(settled.stdout)
    # The money net is money only: 7.00 charged, 1.00 refunded; the points stand apart.
    assert [(item["currency"], item["net"]) for item in answer["totals"]] == [("CNY", "6.00")]
    assert answer["points_totals"] == [
        {"currency": "CNY", "count": 3, "value": "3.50", "value_minor": 350, "points": 350}
    ]
    lines = list(csv.DictReader(io.StringIO(answer["csv"])))
    points_lines = [
        (row["type"], row["points"], row["amount"], row["payment_id"])
        for row in lines
        if row["record"] == "points"
    ]
    assert points_lines == [
        ("points_charge", "300", "3.00", mixed["payment_id"]),
        ("points_charge", "100", "1.00", points_only["payment_id"]),
        ("points_refund", "-50", "-0.50", mixed["payment_id"]),
    ]
    charges = [row["amount"] for row in lines if row["type"] == "charge"]
    assert charges == ["7.00"]  # the points-only payment moved no money
    (total,) = [row for row in lines if row["record"] == "points_total"]
    assert (total["points"], total["amount"], total["count"]) == ("350", "3.50", "3")


def test_the_consent_signature_is_never_logged(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    customer = _customer(server, tmp_path)
    body = _consent_body(customer)
    mandate_id = _post_binding(customer, body)["mandate_id"]
    _redeem(customer, mandate_id, "2.00", 100)
    refused("mandate_signature_invalid", _post_binding, customer,
            _consent_body(customer, sign_over={"rate_minor": 1}))  # fmt: skip
    logged = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    assert "request" in logged  # the request lines were captured
    assert body["signature"] not in logged
    assert "paycode-mandate/1" not in logged


def _reconcile_codes(server: Server) -> set[str]:
    done = server.cli_in_process("--json", "reconcile")
    report = json.loads(done.stdout)
    return {item["code"] for item in report["mismatches"]}


def test_reconcile_names_a_corrupted_redemption(server: Server, tmp_path: Path) -> None:
    """Each check fires on the corruption it is for, and the ledger is restored after."""
    customer = _customer(server, tmp_path)
    mandate_id = _bind(customer)
    payment_id = _redeem(customer, mandate_id, "10.00", 300)["payment_id"]
    assert _reconcile_codes(server) == set()
    corruptions: list[tuple[Any, dict[str, Any], dict[str, Any], set[str]]] = [
        (PointsMandate, {"used_points": 301}, {"used_points": 300}, {"mandate_usage_mismatch"}),
        (
            Payment,
            {"points_value_minor": 200},
            {"points_value_minor": 300},
            {"points_value_mismatch", "charge_mismatch"},
        ),
        (Payment, {"points_refunded": 1}, {"points_refunded": 0}, {"points_refund_mismatch"}),
        (
            Payment,
            {"points": 299},
            {"points": 300},
            {"points_charge_mismatch", "points_value_mismatch", "mandate_usage_mismatch"},
        ),
    ]
    for table, wrong, right, codes in corruptions:
        key = mandate_id if table is PointsMandate else payment_id
        with server.session() as session:
            session.execute(update(table).where(table.id == key).values(**wrong))
        try:
            assert _reconcile_codes(server) == codes, wrong
        finally:
            with server.session() as session:
                session.execute(update(table).where(table.id == key).values(**right))
    assert _reconcile_codes(server) == set()


def test_regression_history_showed_a_redemption_as_paid_wholly_in_money(
    server: Server, tmp_path: Path
) -> None:
    """Found in review: a 10.00 redemption with 300 points took 7.00 from the balance, but the
    wallet's history answered only `amount` 10.00, so the history and the balance disagreed."""
    customer = _customer(server, tmp_path)
    paid = _redeem(customer, _bind(customer), "10.00", 300)
    (item,) = [
        found
        for found in online.history(customer.wallet)["items"]
        if found["payment_id"] == paid["payment_id"]
    ]
    assert item["amount"] == "10.00"
    assert (item["points"]["points"], item["points"]["money"]) == (300, "7.00")
    assert "7.00 CNY money + 300 points" in history_line(item)
