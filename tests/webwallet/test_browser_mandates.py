"""The web wallet shows and revokes points mandates (docs/spec.md §16, docs/webwallet.md
"Points mandates"), against a live server on SQLite and PostgreSQL.

A user with points binds two shops through the wallet API (the Python client signs the consent,
as the CLI does), one shop redeems points under its mandate, and the user opens the web wallet
in a phone-sized chromium page: the points balance and both mandates are listed with their
rate, caps and today's use. Revoking is asked twice; "Keep" sends nothing. Once revoked in the
page, the server says the mandate is revoked, the shop's next redemption is refused
`mandate_revoked`, and the other shop's mandate still works.

Binding from the page: the phone signs the consent (webwallet/src/core/mandateConsent.js) and
the server, which verifies that signature over the bytes it rebuilds, stores the mandate; the
shop then redeems under it. A form the wallet refuses sends nothing; a refusal of the server
is shown with its stable code.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from paycode.client import mandates
from paycode.client.wallet import Wallet
from paycode.server.points import redemption
from paycode.shared.errors import ServerRejected
from tests.support.servers import LiveServer
from tests.support.shop import (
    Merchant,
    new_merchant,
    new_phone,
    new_user,
    unique,
    use_fast_keystore,
    user_id,
)
from tests.support.web_wallet import VIEWPORT, enroll, screenshot

POINTS_GRANTED = 2000


@pytest.fixture(autouse=True)
def _fast_keystore(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


def _bind(wallet: Wallet, merchant: Merchant, *, rate: tuple[int, int]) -> str:
    reply = mandates.bind(
        wallet,
        merchant_id=merchant.merchant_id,
        currency="CNY",
        rate=rate,
        per_payment_points=500,
        per_day_points=800,
        expires_in_days=30,
    )
    return str(reply["mandate_id"])


def _redeem(merchant: Merchant, mandate_id: str, amount: str, points: int) -> dict[str, Any]:
    return merchant.till.redeem_points(
        mandate_id=mandate_id,
        merchant_order_id=unique("order"),
        amount=amount,
        currency="CNY",
        points=points,
    )


def _row(page: Any, mandate_id: str) -> Any:
    return page.locator(f"#mandates li[data-mandate='{mandate_id}']")


def test_web_wallet_lists_and_revokes_mandates(
    live_server: LiveServer, phone: Any, tmp_path: Path
) -> None:
    name = new_user(live_server, "webpoints", top_up="100.00")
    with live_server.session() as session:
        redemption.grant(session, user_id(live_server, name), POINTS_GRANTED, time.time())
    wallet = new_phone(live_server, tmp_path / name, name, ["v2"])
    tea, noodles = new_merchant(live_server, "Tea"), new_merchant(live_server, "Noodles")
    tea_mandate = _bind(wallet, tea, rate=(100, 100))
    noodles_mandate = _bind(wallet, noodles, rate=(50, 25))
    paid = _redeem(tea, tea_mandate, "10.00", 300)
    assert paid["status"] == "succeeded", paid

    page = phone
    enroll(page, live_server, user=name)
    page.click("#nav-wallet")
    page.wait_for_selector("#points-line:has-text('Points: 1,700')")
    tea_row, noodles_row = _row(page, tea_mandate), _row(page, noodles_mandate)
    tea_row.wait_for()
    tea_text = tea_row.inner_text()
    for part in (
        tea.name,
        "active",
        "100 points = 1.00 CNY",
        "Up to 500 points a payment, 800 points a day",
        "Today: 300 points used, 500 left",
        "Until ",
    ):
        assert part in tea_text, (part, tea_text)
    noodles_text = noodles_row.inner_text()
    assert "50 points = 0.25 CNY" in noodles_text
    assert "Today: 0 points used, 800 left" in noodles_text
    # The newest binding first, as the server lists them.
    assert page.eval_on_selector_all(
        "#mandates li[data-mandate]", "rows => rows.map(row => row.dataset.mandate)"
    ) == [noodles_mandate, tea_mandate]
    # Nothing is wider than the 390 px phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
    screenshot(page, "wallet-mandates.png", full_page=True)

    # "Revoke" only asks, saying it cannot be undone; "Keep" sends nothing.
    tea_row.locator("button.revoke").click()
    warning = tea_row.locator(".mandate-confirm .warn")
    assert "cannot be undone" in warning.inner_text() and tea.name in warning.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
    screenshot(page, "wallet-mandate-revoke-confirm.png", full_page=True)
    tea_row.locator("button.keep").click()
    assert tea_row.locator(".mandate-confirm").is_hidden()
    assert [m["status"] for m in mandates.mandates(wallet)] == ["active", "active"]

    tea_row.locator("button.revoke").click()
    tea_row.locator("button.revoke-now").click()
    page.wait_for_selector(f"#mandates li[data-mandate='{tea_mandate}'][data-status='revoked']")
    page.wait_for_selector(f"#notice:has-text('Revoked: {tea.name} can no longer take')")
    tea_text = _row(page, tea_mandate).inner_text()
    assert "Revoked on " in tea_text and "Today:" not in tea_text
    assert _row(page, tea_mandate).locator("button").count() == 0
    assert _row(page, noodles_mandate).get_attribute("data-status") == "active"

    # Over the API: revoked for the server, and no deduction passes any more.
    statuses = {m["mandate_id"]: m["status"] for m in mandates.mandates(wallet)}
    assert statuses == {tea_mandate: "revoked", noodles_mandate: "active"}
    with pytest.raises(ServerRejected) as caught:
        _redeem(tea, tea_mandate, "5.00", 100)
    assert caught.value.code == "mandate_revoked"
    assert _redeem(noodles, noodles_mandate, "5.00", 100)["status"] == "succeeded"

    # A fresh load of the page shows what the server holds.
    page.click("#refresh")
    page.wait_for_selector("#points-line:has-text('Points: 1,600')")
    used = "Today: 100 points used, 700 left"
    page.wait_for_selector(f"#mandates li[data-mandate='{noodles_mandate}']:has-text('{used}')")
    assert _row(page, tea_mandate).get_attribute("data-status") == "revoked"
    assert page.console_errors == []


def test_web_wallet_without_mandates(live_server: LiveServer, phone: Any) -> None:
    name = new_user(live_server, "webnopoints", top_up="10.00")
    page = phone
    enroll(page, live_server, user=name)
    page.click("#nav-wallet")
    page.wait_for_selector("#points-line:has-text('Points: 0')")
    page.wait_for_selector("#mandates li.muted:has-text('No shop may take your points.')")
    assert page.is_hidden("#mandates-error")

    # The list refused (here a server without the feature): the panel says so with the stable
    # code, the rest of the screen still loads.
    page.route(
        "**/v1/wallet/mandates",
        lambda route: route.fulfill(
            status=404,
            content_type="application/problem+json",
            body='{"type": "about:blank", "title": "Not Found", "status": 404,'
            ' "code": "not_found", "detail": "no such endpoint"}',
        ),
    )
    for emptied in ("#history", "#devices"):
        page.eval_on_selector(emptied, "list => list.replaceChildren()")
    page.click("#refresh")
    page.wait_for_selector("#mandates-error:has-text('no such endpoint [not_found]')")
    page.wait_for_selector("#devices li", state="attached")  # inside the closed "This phone"
    page.wait_for_selector("#history li:has-text('No payments yet.')")
    assert page.is_hidden("#wallet-error")
    assert page.console_errors == []


def _fill_binding(page: Any, merchant_id: str, **fields: str) -> None:
    values = {
        "#mandate-merchant": merchant_id,
        "#mandate-rate-points": "10",
        "#mandate-rate-amount": "0.05",
        "#mandate-cap-payment": "200",
        "#mandate-cap-day": "300",
        "#mandate-days": "7",
        "#mandate-reference": "card-7",
    }
    for selector, value in (values | fields).items():
        page.fill(selector, value)
    page.click("#mandate-submit")


def test_web_wallet_binds_a_shop(live_server: LiveServer, phone: Any) -> None:
    name = new_user(live_server, "webbind", top_up="50.00")
    with live_server.session() as session:
        redemption.grant(session, user_id(live_server, name), POINTS_GRANTED, time.time())
    shop = new_merchant(live_server, "Bakery")
    page = phone
    enroll(page, live_server, user=name)
    page.click("#nav-wallet")
    page.wait_for_selector("#mandates li.muted:has-text('No shop may take your points.')")
    page.click("#mandate-bind summary")
    page.wait_for_selector("#mandate-rate-amount-label:has-text('are worth (CNY)')")
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
    screenshot(page, "wallet-mandate-bind.png", full_page=True)

    # Refused in the page: nothing is signed or sent, the field to correct has the focus.
    _fill_binding(page, shop.merchant_id, **{"#mandate-cap-payment": "500"})
    page.wait_for_selector("#mandate-form-error:has-text('cannot be more than the most points')")
    assert page.evaluate("document.activeElement.id") == "mandate-cap-payment"
    # Refused by the server (no such shop): its detail and stable code.
    _fill_binding(page, "mch_nobody")
    page.wait_for_selector("#mandate-form-error:has-text('[not_found]')")
    assert shop.till.points_mandates()["items"] == []

    # The server stores the binding but its answer is lost on the way back: the page says so,
    # and tapping again resends the same consent under the same Idempotency-Key, so the
    # server answers the binding it holds instead of making a second one.
    sent: list[str] = []

    def lose_the_answer(route: Any) -> None:
        sent.append(route.request.headers["idempotency-key"])
        route.fetch()
        route.abort()

    page.route("**/v1/wallet/mandates", lose_the_answer)
    _fill_binding(page, shop.merchant_id)
    page.wait_for_selector("#mandate-form-error:has-text('No connection to the Paycode server')")
    page.unroute("**/v1/wallet/mandates")
    assert len(shop.till.points_mandates()["items"]) == 1
    page.console_errors[:] = [e for e in page.console_errors if "net::ERR_FAILED" not in e]
    page.wait_for_timeout(1100)  # a later second: a rebuilt consent would expire later
    page.click("#mandate-submit")
    page.wait_for_selector(f"#notice:has-text('Allowed: {shop.name} may take up to 200 points')")
    assert len(sent) == 1
    assert page.is_hidden("#mandate-form-error")
    row = page.locator("#mandates li[data-mandate][data-status='active']")
    row.wait_for()
    shown = row.inner_text()
    for part in (
        "10 points = 0.05 CNY",
        "Up to 200 points a payment, 300 points a day",
        "0 points used",
    ):
        assert part in shown, (part, shown)

    # The server holds exactly what the form said, and the shop can use it.
    ((held,),) = [shop.till.points_mandates()["items"]]  # one: the retry was a replay
    assert row.get_attribute("data-mandate") == held["mandate_id"]
    assert {key: held[key] for key in ("rate_points", "rate_minor", "currency", "reference")} == {
        "rate_points": 10,
        "rate_minor": 5,
        "currency": "CNY",
        "reference": "card-7",
    }
    assert (held["cap_per_payment_points"], held["cap_per_day_points"]) == (200, 300)
    assert 6.9 * 86_400 < held["expires_at_s"] - time.time() <= 7 * 86_400
    paid = _redeem(shop, held["mandate_id"], "3.00", 200)  # 200 points = 1.00 CNY
    assert paid["status"] == "succeeded", paid
    page.click("#refresh")
    page.wait_for_selector(f"#points-line:has-text('Points: {POINTS_GRANTED - 200:,}')")
    page.wait_for_selector("#mandates li[data-mandate]:has-text('200 points used, 100 left')")
    assert page.console_errors == []
