"""Hosted checkout and payment links on SQLite and PostgreSQL (docs/api.md, "Hosted checkout";
docs/spec.md, section 15): created by a signed terminal request, paid by a real wallet through
the real ledger, the signed return verified with the public keys a terminal fetches, the
notification written like any order payment's, and a link's payments counted by the database
however many customers race for them."""

from __future__ import annotations

import functools
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from paycode.client import online
from paycode.client.wallet import Wallet
from paycode.server.config import public_url_of
from paycode.server.database.models import Notification, Order, Payment
from paycode.shared.checkout_return import ReturnCheck, ReturnVerdict, verify_return
from paycode.shared.codes import HTTP_STATUS
from paycode.shared.emv.qr_signature import from_b64url
from paycode.shared.errors import ConfigError, ServerRejected
from tests.support.servers import Server, all_at_once, started
from tests.support.shop import (
    Merchant,
    new_merchant,
    new_phone,
    new_user,
    refused,
    unique,
    use_fast_keystore,
)

SHOP_RETURN = "https://shop.example/thanks?cart=7"


@pytest.fixture(autouse=True)
def _fast_keystore(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


def customer(server: Server, home: Path, top_up: str = "500.00") -> Wallet:
    name = new_user(server, "payer", top_up=top_up)
    return new_phone(server, home / name, name, ["v2"])


def create(shop: Merchant, amount: str = "12.50", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"amount": amount, "currency": "CNY"} | fields
    return shop.till.create_checkout(body)


def public_keys(shop: Merchant) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for key in shop.till.qr_keys():
        raw = from_b64url(key["public_key"])
        assert raw is not None
        keys[key["key_id"]] = raw
    return keys


def status_of(server: Server, token: str) -> tuple[int, dict[str, Any]]:
    answer = server.app.test_client().get(f"/pay/{token}/status")  # type: ignore[attr-defined]
    assert answer.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = answer.get_json()
    return answer.status_code, body


def verified(shop: Merchant, url: str) -> ReturnCheck:
    query = urllib.parse.urlsplit(url).query
    return verify_return(urllib.parse.parse_qsl(query, keep_blank_values=True), public_keys(shop))


def test_a_checkout_answers_where_to_send_the_customer(server: Server) -> None:
    shop = new_merchant(server, "WebShop")
    made = create(shop, merchant_order_id="WEB-1", return_url=SHOP_RETURN, expires_in_s=600)
    assert made["kind"] == "checkout" and made["status"] == "open"
    assert made["amount"] == "12.50" and made["merchant_order_id"] == "WEB-1"
    assert made["pay_url"].endswith(f"/pay/{made['token']}") and len(made["token"]) == 24
    assert made["return_url"] == SHOP_RETURN and made["payments_max"] is None
    assert made["token"] in made["qr_payload"]
    # The orders API reads and cancels it like any order of this merchant.
    assert shop.till.order(made["order_id"])["status"] == "open"
    refused("not_found", new_merchant(server).till.order, made["order_id"])


@pytest.mark.parametrize(
    "url",
    [
        "http://shop.example/thanks",  # http only to this machine
        "ftp://shop.example/x",
        "/thanks",  # not absolute
        "https://user:pw@shop.example/thanks",
        "https://shop.example/thanks?paycode_status=paid",
        "https://shop.example/th anks",
        "https://shop.example/\u00e9",
        "https://shop.example/" + "a" * 2000,
        "https://shop.example:99999/",
        "",
    ],
)
def test_a_return_url_the_server_cannot_sign_a_return_to_is_refused(
    server: Server, url: str
) -> None:
    shop = new_merchant(server, "WebShop")
    refused("return_url_invalid", create, shop, return_url=url)


def test_checkout_and_link_limits_are_refused_with_stable_codes(server: Server) -> None:
    shop = new_merchant(server, "WebShop")
    refused("invalid_request", create, shop, kind="till")
    refused("invalid_request", create, shop, expires_in_s=24 * 3600 + 1)
    refused("invalid_request", create, shop, payments_max=2)  # a checkout is paid once
    refused("invalid_request", create, shop, kind="link", payments_max=0)
    refused("invalid_request", create, shop, kind="link", payments_max=True)
    refused("invalid_request", create, shop, kind="link", expires_in_s=30 * 24 * 3600 + 1)
    refused("invalid_request", create, shop, merchant_order_id="A\nB")
    refused(
        "invalid_request", create, shop, kind="link", payments_max=5, merchant_order_id="x" * 60
    )
    refused("return_url_invalid", create, shop, kind="link", payments_max=2, return_url=SHOP_RETURN)
    refused("amount_invalid", create, shop, amount="0.00")
    refused("currency_mismatch", create, shop, currency="USD")
    # What is allowed: a local http return (a shop on this machine), a month-long invoice.
    assert create(shop, return_url="http://127.0.0.1:8000/back")["status"] == "open"
    invoice = create(shop, kind="link", expires_in_s=30 * 24 * 3600, return_url=SHOP_RETURN)
    assert invoice["kind"] == "link" and invoice["payments_max"] == 1


def test_a_paid_checkout_returns_a_signed_result_and_notifies_the_shop(
    server: Server, tmp_path: Path
) -> None:
    shop = new_merchant(server, "WebShop", notify_url="http://127.0.0.1:9/hook")
    made = create(shop, "12.50", merchant_order_id=unique("WEB"), return_url=SHOP_RETURN)
    assert status_of(server, made["token"]) == (
        200,
        {"status": "open", "amount": "12.50", "currency": "CNY", "paid_count": 0,
         "payments_max": None, "return_to": None},
    )  # fmt: skip
    wallet = customer(server, tmp_path)
    paid = online.pay(wallet, qr_payload=made["qr_payload"], amount=None)
    assert paid["merchant_order_id"] == made["merchant_order_id"]

    code, state = status_of(server, made["token"])
    assert code == 200 and state["status"] == "paid" and state["paid_count"] == 1
    back = state["return_to"]
    assert back.startswith("https://shop.example/thanks?cart=7&paycode_order=")
    check = verified(shop, back)
    assert check.verdict is ReturnVerdict.VALID
    assert dict(check.fields) == dict(check.fields) | {
        "order": made["order_id"],
        "merchant": shop.merchant_id,
        "merchant_order_id": made["merchant_order_id"],
        "status": "paid",
        "payment": paid["payment_id"],
        "amount": "12.50",
        "currency": "CNY",
    }
    # The customer edits the address bar: the shop sees it.
    cheaper = back.replace("paycode_amount=12.50", "paycode_amount=1.25")
    assert cheaper != back and verified(shop, cheaper).verdict is ReturnVerdict.ALTERED
    with server.session() as session:
        outbox = session.scalar(
            select(func.count()).where(Notification.payment_id == paid["payment_id"])
        )
    assert outbox == 1

    # Paid twice: refused, nothing moves, the page still says paid.
    second = customer(server, tmp_path)
    refused("duplicate_order", online.pay, second, qr_payload=made["qr_payload"], amount=None)
    assert online.balance(second)["accounts"][0]["balance"] == "500.00"
    assert status_of(server, made["token"])[1]["status"] == "paid"


def test_expired_and_cancelled_checkouts_say_so_and_refuse_payment(
    server: Server, tmp_path: Path
) -> None:
    shop = new_merchant(server, "WebShop")
    wallet = customer(server, tmp_path)
    expired, cancelled = create(shop, return_url=SHOP_RETURN), create(shop)
    with server.session() as session:
        session.execute(
            update(Order).where(Order.id == expired["order_id"]).values(expires_at_s=1.0)
        )
    shop.till.cancel_order(cancelled["order_id"])
    for made, state, code in (
        (expired, "expired", "order_expired"),
        (cancelled, "cancelled", "order_cancelled"),
    ):
        assert status_of(server, made["token"])[1]["status"] == state
        assert status_of(server, made["token"])[1]["return_to"] is None
        refused(code, online.pay, wallet, qr_payload=made["qr_payload"], amount=None)
    assert online.balance(wallet)["accounts"][0]["balance"] == "500.00"


def test_an_invoice_link_is_paid_once_under_its_own_order_id(
    server: Server, tmp_path: Path
) -> None:
    shop = new_merchant(server, "WebShop")
    invoice = create(shop, "30.00", kind="link", merchant_order_id=unique("INV"))
    paid = online.pay(customer(server, tmp_path), qr_payload=invoice["qr_payload"], amount=None)
    assert paid["merchant_order_id"] == invoice["merchant_order_id"]
    refused(
        "duplicate_order",
        online.pay,
        customer(server, tmp_path),
        qr_payload=invoice["qr_payload"],
        amount=None,
    )
    order = shop.till.order(invoice["order_id"])
    assert order["status"] == "paid" and order["payment"]["payment_id"] == paid["payment_id"]


def test_a_link_takes_its_payments_max_each_its_own_payment(server: Server, tmp_path: Path) -> None:
    shop = new_merchant(server, "WebShop")
    link = create(shop, "5.00", kind="link", payments_max=3, merchant_order_id=unique("DUES"))
    wallets = [customer(server, tmp_path) for _ in range(4)]
    references = []
    for wallet in wallets[:3]:
        assert status_of(server, link["token"])[1]["status"] == "open"
        references.append(online.pay(wallet, qr_payload=link["qr_payload"], amount=None))
    assert [paid["merchant_order_id"] for paid in references] == [
        f"{link['merchant_order_id']}/{n}" for n in (1, 2, 3)
    ]
    refused("duplicate_order", online.pay, wallets[3], qr_payload=link["qr_payload"], amount=None)
    state = status_of(server, link["token"])[1]
    assert (state["status"], state["paid_count"], state["payments_max"]) == ("paid", 3, 3)
    assert state["return_to"] is None  # several payers: no single way back


def test_racing_payers_never_push_a_link_past_its_payments_max(
    live_server: Server, tmp_path: Path
) -> None:
    shop = new_merchant(live_server, "WebShop")
    link = create(shop, "5.00", kind="link", payments_max=3, merchant_order_id=unique("RACE"))
    wallets = [customer(live_server, tmp_path) for _ in range(8)]

    def pay(wallet: Wallet) -> str:
        try:
            online.pay(wallet, qr_payload=link["qr_payload"], amount=None)
        except Exception as error:
            return str(getattr(error, "code", type(error).__name__))
        return "paid"

    results = all_at_once([functools.partial(pay, wallet) for wallet in wallets])
    assert sorted(results) == ["duplicate_order"] * 5 + ["paid"] * 3, results
    balances = sorted(online.balance(w)["accounts"][0]["balance"] for w in wallets)
    assert balances == ["495.00"] * 3 + ["500.00"] * 5
    with live_server.session() as session:
        order = session.scalar(select(Order).where(Order.id == link["order_id"]))
        assert order is not None and (order.paid_count, order.status) == (3, "paid")
        prefix = f"{link['merchant_order_id']}/%"
        numbered = session.scalars(
            select(Payment.merchant_order_id).where(Payment.merchant_order_id.like(prefix))
        ).all()
    assert sorted(str(reference) for reference in numbered) == [
        f"{link['merchant_order_id']}/{n}" for n in (1, 2, 3)
    ]


def test_pay_url_uses_the_public_url_when_the_operator_sets_one(tmp_path: Path) -> None:
    """Behind a TLS proxy the request arrives as http://internal: PAYCODE_PUBLIC_URL says
    where customers reach the server."""
    public = {"PAYCODE_PUBLIC_URL": "https://pay.example.com/"}
    with started("sqlite", "in_process", extra_env=public) as server:
        made = create(new_merchant(server, "WebShop"))
    assert made["pay_url"] == f"https://pay.example.com/pay/{made['token']}"


@pytest.mark.parametrize(
    "value",
    ["pay.example.com", "ftp://pay.example.com", "https://", "https://a/?x=1", "https://u@a"],
)
def test_a_public_url_that_is_not_one_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="PAYCODE_PUBLIC_URL"):
        public_url_of({"PAYCODE_PUBLIC_URL": value})
    assert public_url_of({}) is None
    assert public_url_of({"PAYCODE_PUBLIC_URL": "http://127.0.0.1:8000"}) == "http://127.0.0.1:8000"


@pytest.mark.parametrize(
    "odd",
    [
        {"kind": ["link"]},
        {"kind": {"a": 1}},
        {"kind": None},
        {"kind": "link", "payments_max": "3"},
        {"kind": "link", "payments_max": 2.5},
        {"kind": "link", "payments_max": 10**30},
        {"return_url": 7},
        {"return_url": ["https://shop.example/"]},
        {"return_url": "https://[::1"},
        {"return_url": "https://shop.example/\x00"},
        {"return_url": "https://"},
        {"return_url": "javascript:alert(1)"},
        {"return_url": "data:text/html,hi"},
        {"merchant_order_id": 12},
        {"merchant_order_id": ""},
        {"merchant_order_id": "x" * 65},
        {"expires_in_s": 60.0},
        {"expires_in_s": "60"},
        {"amount": 12.5},
    ],
)
def test_an_odd_body_is_refused_with_a_stable_code_and_creates_nothing(
    server: Server, odd: dict[str, Any]
) -> None:
    shop = new_merchant(server, "WebShop")
    body: dict[str, Any] = {"amount": "1.00", "currency": "CNY"} | odd
    with pytest.raises(ServerRejected) as caught:
        shop.till.create_checkout(body)
    assert HTTP_STATUS[caught.value.code] == 400, (caught.value.code, caught.value.message)
    with server.session() as session:
        made = session.scalar(select(func.count()).where(Order.merchant_id == shop.merchant_id))
    assert made == 0
