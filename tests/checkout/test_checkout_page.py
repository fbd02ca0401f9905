"""The hosted checkout page, /pay/<token>, as HTML over HTTP on SQLite and PostgreSQL: what it
shows in each state, that it loads nothing from elsewhere (its CSP and its markup), that an
unknown token is a plain "not found" page, and that the orders table the migration builds is
the one the models declare."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.client import online
from paycode.server.database.models import Base, Order
from tests.checkout.test_checkout_api import SHOP_RETURN, create, customer
from tests.support.servers import Server
from tests.support.shop import new_merchant, new_order, use_fast_keystore

EXTERNAL = re.compile(r"(?:https?:)?//", re.IGNORECASE)
"""Any absolute or scheme-relative URL in the page's HTML."""
EXTERNAL_IN_ASSET = re.compile(r"https?://(?!www\.w3\.org/2000/svg\b)|url\(\s*['\"]?//", re.I)
"""In a script, style or icon (where // also starts a comment): a URL other than the SVG
namespace, which names and fetches nothing."""


@pytest.fixture(autouse=True)
def _fast_keystore(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


def get_page(server: Server, path: str) -> Any:
    return server.app.test_client().get(path)  # type: ignore[attr-defined]


def test_an_open_checkout_shows_the_merchant_the_amount_and_the_qr(server: Server) -> None:
    shop = new_merchant(server, "WebShop")
    made = create(shop, "88.00", merchant_order_id="WEB-88", return_url=SHOP_RETURN)
    page = get_page(server, f"/pay/{made['token']}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert shop.name in html and "Verified merchant" in html and "Beijing" in html
    assert "88.00" in html and "CNY" in html and "WEB-88" in html
    assert 'data-status="open"' in html and "Waiting for payment" in html
    assert '<svg id="qr"' in html and 'name="viewport"' in html
    wallet_link = re.search(r'id="open-wallet" class="button" href="([^"]+)"', html)
    assert wallet_link is not None
    href = wallet_link.group(1).replace("&amp;", "&")
    assert href.startswith("/wallet/#pay=")
    assert urllib.parse.unquote(href.removeprefix("/wallet/#pay=")) == made["qr_payload"]


def test_the_page_loads_nothing_from_anywhere_else(server: Server) -> None:
    shop = new_merchant(server, "WebShop")
    made = create(shop, return_url=SHOP_RETURN)
    page = get_page(server, f"/pay/{made['token']}")
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    html = page.get_data(as_text=True)
    assert EXTERNAL.findall(html) == []
    # Nothing the CSP would have to allow inline: a script body, a style, an event handler.
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>|\sstyle=|\son[a-z]+\s*=", html) == []
    for asset in re.findall(r'(?:src|href)="(/pay/static/[^"]+|/dashboard/static/[^"]+)"', html):
        fetched = get_page(server, asset)
        assert fetched.status_code == 200, asset
        assert EXTERNAL_IN_ASSET.findall(fetched.get_data(as_text=True)) == [], asset


def test_each_final_state_is_shown_without_a_qr(server: Server, tmp_path: Path) -> None:
    shop = new_merchant(server, "WebShop")
    paid, expired, cancelled = (create(shop, return_url=SHOP_RETURN) for _ in range(3))
    online.pay(customer(server, tmp_path), qr_payload=paid["qr_payload"], amount=None)
    with server.session() as session:
        session.execute(
            update(Order).where(Order.id == expired["order_id"]).values(expires_at_s=1.0)
        )
    shop.till.cancel_order(cancelled["order_id"])
    for made, state, text in (
        (paid, "paid", "Paid"),
        (expired, "expired", "This payment expired"),
        (cancelled, "cancelled", "The shop cancelled this payment"),
    ):
        html = get_page(server, f"/pay/{made['token']}").get_data(as_text=True)
        assert f'data-status="{state}"' in html and text in html
        assert '<svg id="qr"' not in html and "open-wallet" not in html
        assert ("data-return-to=" in html) is (state == "paid")


def test_a_link_shows_how_many_have_paid(server: Server, tmp_path: Path) -> None:
    shop = new_merchant(server, "WebShop")
    link = create(shop, "5.00", kind="link", payments_max=2)
    online.pay(customer(server, tmp_path), qr_payload=link["qr_payload"], amount=None)
    html = get_page(server, f"/pay/{link['token']}").get_data(as_text=True)
    assert "1 of 2 paid" in html and 'data-status="open"' in html and '<svg id="qr"' in html


def test_an_unknown_token_is_a_plain_not_found_page(server: Server) -> None:
    shop = new_merchant(server, "WebShop")
    till_order = new_order(shop.till, "3.00")
    till_token = re.search(r"[A-Za-z0-9_-]{24}", till_order["qr_payload"].split("0324")[-1])
    assert till_token is not None
    for token in ("A" * 24, "short", "A" * 23 + "!", till_token.group(0)):
        page = get_page(server, f"/pay/{urllib.parse.quote(token)}")
        assert page.status_code == 404 and page.mimetype == "text/html", token
        assert "Not found" in page.get_data(as_text=True)
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    status = get_page(server, f"/pay/{'A' * 24}/status")
    assert status.status_code == 404 and status.get_json()["code"] == "not_found"


def test_the_database_refuses_a_link_counted_past_its_payments_max(migrated: Engine) -> None:
    tables = Base.metadata.tables
    with Session(migrated) as session:
        session.execute(
            insert(tables["merchants"]).values(
                id="mer_1", name="m", currency="CNY", created_at_s=1.0
            )
        )
        session.execute(
            insert(tables["orders"]).values(
                id="ord_1",
                token="T" * 24,
                merchant_id="mer_1",
                merchant_order_id="L-1",
                amount_minor=100,
                currency="CNY",
                status="open",
                created_at_s=1.0,
                expires_at_s=2.0,
                kind="link",
                payments_max=2,
            )
        )
        session.commit()
        assert session.get(Order, "ord_1") is not None
        assert session.get_one(Order, "ord_1").paid_count == 0
        session.execute(update(Order).where(Order.id == "ord_1").values(paid_count=2))
        session.commit()
        with pytest.raises(IntegrityError):
            session.execute(update(Order).where(Order.id == "ord_1").values(paid_count=3))
            session.commit()
