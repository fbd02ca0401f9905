"""Merchant-presented QR end to end: poster -> POS scanner decode -> wallet pays -> money once.

And the sniff-and-spend defence: a code bound to one merchant's poster is refused at another
merchant's till, burns nothing there, and still pays where it was meant to.

`paycode-pos` and `paycode-wallet` run in this process against the app in this process: what
they print and what the ledger does is the subject (test_tools_cli.py's demo runs the whole
flow as processes over real HTTP).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paycode.appkit.decoding import decode_image_file
from paycode.merchant_pos.identify import describe
from tests.support.servers import Server
from tests.support.shop import Shop, ok_json, open_shop

CAFE, SHOP = "Corner Cafe", "Other Shop"


@pytest.fixture(scope="module")
def shop(app_sqlite: Server, tmp_path_factory: pytest.TempPathFactory) -> Shop:
    home = tmp_path_factory.mktemp("collection")
    return open_shop(app_sqlite, home, merchants=[CAFE, SHOP], top_up="100.00")


def _poster(shop: Shop, path: Path, *args: str) -> dict[str, object]:
    return ok_json(shop.pos("poster", "--out", str(path), *args, merchant=CAFE))


def test_order_poster_is_scanned_and_paid_once(shop: Shop, tmp_path: Path) -> None:
    poster = tmp_path / "order.png"
    made = _poster(shop, poster, "--amount", "12.00", "--order", "INV-1042")
    decoded = decode_image_file(poster)
    assert [d.format for d in decoded] == ["qr"]
    info = describe(decoded[0].text)
    assert info["kind"] == "emv_mpm" and info["well_formed"] is True
    assert info["paycode_collection"]["merchant_id"] == made["merchant_id"]
    assert info["amount"] == "12.00"
    before = float(shop.balance())
    paid = shop.wallet("pay", "--qr-image", str(poster), "--yes")["payment"]
    assert paid["status"] == "succeeded" and paid["amount"] == "12.00"
    assert paid["merchant"] == CAFE
    assert float(shop.balance()) == pytest.approx(before - 12.00)
    seen = ok_json(shop.pos("query", "--order", "INV-1042", merchant=CAFE))
    assert [p["payment_id"] for p in seen["payments"]] == [paid["payment_id"]]
    again = shop.wallet_raw("pay", "--qr-image", str(poster), "--yes")
    assert again.returncode == 1
    assert json.loads(again.stdout)["error"]["code"] == "duplicate_order"
    assert float(shop.balance()) == pytest.approx(before - 12.00)


def test_fixed_amount_poster_pays_each_time(shop: Shop, tmp_path: Path) -> None:
    poster = tmp_path / "coffee.png"
    _poster(shop, poster, "--amount", "2.50")
    before = float(shop.balance())
    for _ in range(2):
        paid = shop.wallet("pay", "--qr-image", str(poster), "--yes")
        assert paid["payment"]["amount"] == "2.50"
        assert paid["payee"]["verdict"] == "verified" and paid["payee"]["name"] == CAFE
    other = shop.wallet_raw("pay", "--qr-image", str(poster), "--amount", "0.01", "--yes")
    assert json.loads(other.stdout)["error"]["code"] == "amount_invalid"
    assert float(shop.balance()) == pytest.approx(before - 5.00)


def test_static_poster_takes_the_customers_amount(shop: Shop, tmp_path: Path) -> None:
    poster = tmp_path / "counter.png"
    _poster(shop, poster)
    before = float(shop.balance())
    paid = shop.wallet("pay", "--qr-image", str(poster), "--amount", "3.50", "--yes")["payment"]
    assert paid["amount"] == "3.50" and paid["code_version"] == "mpm"
    missing = shop.wallet_raw("pay", "--qr-image", str(poster), "--yes")
    assert json.loads(missing.stdout)["error"]["code"] == "amount_invalid"
    assert float(shop.balance()) == pytest.approx(before - 3.50)


def test_pdf_poster(shop: Shop, tmp_path: Path) -> None:
    pdf = tmp_path / "poster.pdf"
    _poster(shop, pdf, "--amount", "1.00")
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000
    wrong = shop.pos("poster", "--out", str(tmp_path / "poster.gif"), merchant=CAFE)
    assert json.loads(wrong.stdout)["error"]["code"] == "invalid_argument"


def test_bound_code_pays_only_where_it_was_bound(shop: Shop, tmp_path: Path) -> None:
    poster = tmp_path / "bind.png"
    _poster(shop, poster, "--any-terminal")
    code = shop.code("v2", "--bind-qr", str(poster))
    before = float(shop.balance())
    elsewhere = shop.pos(
        "charge", "--amount", "2.00", "--source", "stdin", merchant=SHOP, stdin=code + "\n"
    )
    assert elsewhere.returncode == 3
    assert json.loads(elsewhere.stdout)["code"] == "merchant_mismatch"
    assert float(shop.balance()) == pytest.approx(before)
    here = shop.pos(
        "charge", "--amount", "2.00", "--source", "stdin", merchant=CAFE, stdin=code + "\n"
    )
    assert ok_json(here)["paid"] is True
    assert float(shop.balance()) == pytest.approx(before - 2.00)
