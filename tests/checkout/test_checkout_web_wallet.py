"""The checkout page's "Pay with the web wallet" button on the same phone (chromium at 390 x
844, a live SQLite server, the built web wallet): the wallet opens the page's signed payload
from /wallet/#pay=, shows the payee verified, pays it; the checkout page, opened again, is
paid and takes the customer back to the shop with a return that verifies."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paycode.shared.checkout_return import ReturnVerdict, verify_return
from tests.checkout.test_checkout_api import create, public_keys
from tests.support.servers import LiveServer
from tests.support.shop import new_merchant, new_user, unique, use_fast_keystore
from tests.support.web_wallet import enroll, open_phone, screenshot

SHOP = "https://shop.example"
RETURN_URL = f"{SHOP}/done"


@pytest.fixture
def phone(chromium: Any) -> Iterator[Any]:
    yield from open_phone(chromium)


def test_the_web_wallet_button_pays_the_checkout_on_the_same_phone(
    phone: Any, live_sqlite: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fast_keystore(monkeypatch)
    shop = new_merchant(live_sqlite, "WebShop")
    made = create(shop, "4.40", merchant_order_id=unique("WEB"), return_url=RETURN_URL)
    user = new_user(live_sqlite, "webcheckout", top_up="50.00")
    page = phone
    page.route(
        f"{SHOP}/**",
        lambda route: route.fulfill(status=200, content_type="text/html", body="<p>Thanks</p>"),
    )
    enroll(page, live_sqlite, user)

    page.goto(made["pay_url"])
    page.click("#open-wallet")
    verdict = page.wait_for_selector("#payee-verdict.verified")
    assert verdict.inner_text().startswith(shop.name)
    assert "4.40" in page.inner_text("#payee-amount")
    assert "#pay=" not in page.url  # dropped at once: a reload does not reopen it
    screenshot(page, "checkout-web-wallet.png")
    page.click("#pay-submit")
    page.wait_for_selector(f"#pay-result:has-text('Paid 4.40 CNY to {shop.name}')")

    # Back on the checkout page (the customer's back button): paid, and on to the shop.
    page.goto(made["pay_url"])
    page.wait_for_url(f"{RETURN_URL}?**")
    query = urllib.parse.urlsplit(page.url).query
    check = verify_return(urllib.parse.parse_qsl(query, keep_blank_values=True), public_keys(shop))
    assert check.verdict is ReturnVerdict.VALID
    assert (check.fields["order"], check.fields["amount"]) == (made["order_id"], "4.40")
    errors = [e for e in page.console_errors if f"another origin: {SHOP}/" not in e]
    assert errors == []
