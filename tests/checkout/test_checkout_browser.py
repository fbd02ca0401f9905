"""The hosted checkout in a real browser: Debian's chromium, driven by Playwright, at a phone's
390 x 844, against a live server on SQLite and on PostgreSQL (gunicorn).

A shop creates a checkout; the customer's browser opens its page; the test reads the QR the
way a phone would, by decoding the pixels of the rendered SVG, and a real wallet pays it. The
page must turn to paid by itself (the same document: a marker set before paying is still
there), then take the customer back to the shop's return URL, whose signed parameters the
test verifies with the public keys a terminal fetches; a tampered copy must not verify. Every
request the page makes goes to the Paycode server itself, and nothing overflows 390 px.
"""

from __future__ import annotations

import io
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from PIL import Image

from paycode.client import online
from paycode.shared.checkout_return import ReturnVerdict, verify_return
from tests.checkout.test_checkout_api import create, customer, public_keys
from tests.support.browser import PNG_MAGIC, TIMEOUT_MS, screenshot_dir
from tests.support.servers import Server
from tests.support.shop import new_merchant, unique, use_fast_keystore

PHONE = {"width": 390, "height": 844}
SHOP = "https://shop.example"
RETURN_URL = f"{SHOP}/thanks?cart=7"


def _decoded_qr(png: bytes) -> str:
    assert png.startswith(PNG_MAGIC)
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    texts = [barcode.text for barcode in found if barcode.format == zxingcpp.BarcodeFormat.QRCode]
    assert len(texts) == 1, texts
    return str(texts[0])


def _query_pairs(url: str) -> list[tuple[str, str]]:
    return urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True)


def test_pay_the_page_see_it_turn_paid_and_come_back_signed(
    chromium: Any, live_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fast_keystore(monkeypatch)
    shop = new_merchant(live_server, "WebShop")
    made = create(shop, "23.40", merchant_order_id=unique("WEB"), return_url=RETURN_URL)
    wallet = customer(live_server, tmp_path)

    context = chromium.new_context(viewport=PHONE, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    requested: list[str] = []
    console_errors: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    def on_console(message: Any) -> None:
        if message.type == "error":  # a CSP violation shows here first
            console_errors.append(message.text)

    page.on("console", on_console)
    # The shop's return page: the navigation is real, the shop is played by the test.
    page.route(
        f"{SHOP}/**",
        lambda route: route.fulfill(status=200, content_type="text/html", body="<p>Thanks</p>"),
    )
    try:
        page.goto(made["pay_url"])
        assert page.get_attribute("body", "data-status") == "open"
        assert page.inner_text("#amount") == "23.40"
        assert shop.name in page.inner_text("#merchant")
        assert page.get_attribute("#open-wallet", "href", timeout=TIMEOUT_MS).startswith(
            "/wallet/#pay="
        )
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.screenshot(path=str(screenshot_dir() / "checkout-open.png"), full_page=True)

        payload = _decoded_qr(page.locator("#qr").screenshot())
        assert payload == made["qr_payload"]
        page.evaluate("window.__paycodeMarker = 'same document'")
        paid = online.pay(wallet, qr_payload=payload, amount=None)

        # Paid without a reload: the marker set before paying is still in this document.
        page.wait_for_function(
            "() => document.body.dataset.status === 'paid'"
            " && window.__paycodeMarker === 'same document'"
            " && !document.getElementById('back').hidden"
        )
        assert page.inner_text("#status") == "Paid"
        assert page.locator("#pay").is_hidden()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.screenshot(path=str(screenshot_dir() / "checkout-paid.png"), full_page=True)

        page.wait_for_url(f"{SHOP}/thanks?**")
        back = page.url
    finally:
        context.close()

    assert back.startswith(f"{RETURN_URL}&paycode_order=")
    check = verify_return(_query_pairs(back), public_keys(shop))
    assert check.verdict is ReturnVerdict.VALID
    assert check.fields["payment"] == paid["payment_id"]
    assert (check.fields["amount"], check.fields["currency"]) == ("23.40", "CNY")
    assert check.fields["merchant_order_id"] == made["merchant_order_id"]
    tampered = back.replace("paycode_amount=23.40", "paycode_amount=2.34")
    assert verify_return(_query_pairs(tampered), public_keys(shop)).verdict is (
        ReturnVerdict.ALTERED
    )

    ours = [url for url in requested if not url.startswith(f"{SHOP}/")]
    assert ours and all(url.startswith(f"{live_server.url}/") for url in ours), requested
    assert console_errors == []
