"""Customer scans merchant, end to end through the console scripts and a live server: the till
presents a dynamic order QR in its window under Xvfb; a real screenshot of that window is what
`paycode-wallet pay --qr-image` reads and pays; the till then shows PAID for the sale's amount.

Over real HTTP to a live server (`live_server`): `paycode-pos` under xvfb-run is a process of
its own; the wallet's commands run their `main` in this process (the same code without an
interpreter start-up each, tests/support/shop.py).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from paycode.appkit.decoding import decode_image_file
from paycode.appkit.rendering import qr_image, save_png
from paycode.merchant_pos.identify import describe
from tests.support.servers import LiveServer
from tests.support.shop import Shop, open_shop

CAFE = "Present Cafe"
XVFB = ["xvfb-run", "-a", "-s", "-screen 0 1600x900x24"]
SHOWN_WITHIN_S = 30.0


@pytest.fixture(scope="module")
def shop(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Shop:
    home = tmp_path_factory.mktemp("present")
    return open_shop(live_server, home, merchants=[CAFE], top_up="100.00", in_process=True)


def _shown(screenshot: Path, till: Future[Any]) -> None:
    """Wait until the till has put its QR on screen and grabbed it (the file appears whole)."""
    deadline_s = time.monotonic() + SHOWN_WITHIN_S
    while not screenshot.exists():
        if till.done():
            done = till.result()
            raise AssertionError(f"the POS ended first: {done.stdout} {done.stderr}")
        assert time.monotonic() < deadline_s, "the till never showed its QR"
        time.sleep(0.1)


def test_wallet_pays_the_screenshot_of_the_tills_window(shop: Shop, tmp_path: Path) -> None:
    assert shutil.which("xvfb-run"), "Debian's xvfb is missing: `make setup` installs it"
    shot = tmp_path / "till-window.png"
    before = Decimal(shop.balance())
    with ThreadPoolExecutor(max_workers=1) as pool:
        till = pool.submit(
            shop.pos,
            "charge", "--amount", "12.50", "--present", "--present-wait-s", "60",
            "--hold-s", "0", "--screenshot", str(shot),
            wrap=XVFB,
        )  # fmt: skip
        _shown(shot, till)
        [decoded] = decode_image_file(shot)
        assert describe(decoded.text)["amount"] == "12.50"
        paid = shop.wallet("pay", "--qr-image", str(shot), "--yes")["payment"]
        done = till.result()
    assert paid["status"] == "succeeded" and paid["amount"] == "12.50"
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["paid"] is True and outcome["code"] == "paid"
    assert outcome["amount"] == "12.50" and outcome["currency"] == "CNY"
    assert outcome["payment"]["payment_id"] == paid["payment_id"]
    assert outcome["payment"]["amount_minor"] == 1250
    assert Decimal(shop.balance()) == before - Decimal("12.50")
    again = shop.wallet_raw("pay", "--qr-image", str(shot), "--yes")
    assert again.returncode == 1, "an order pays once"
    assert Decimal(shop.balance()) == before - Decimal("12.50")


def test_unpaid_order_is_cancelled_and_cannot_be_paid_after(shop: Shop, tmp_path: Path) -> None:
    """Headless, the QR goes to stderr; nobody pays it, the wait runs out, the till cancels
    (exit 3, order_cancelled), and the code it showed pays nothing afterwards."""
    before = shop.balance()
    done = shop.pos(
        "charge", "--amount", "3.00", "--present", "--present-wait-s", "2", "--headless"
    )
    assert done.returncode == 3, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["paid"] is False and outcome["code"] == "order_cancelled"
    payload = re.search(r"^(000201.+)$", done.stderr, re.MULTILINE)
    assert payload is not None, done.stderr
    qr = tmp_path / "cancelled.png"
    save_png(qr_image(payload.group(1)), qr)
    late = shop.wallet_raw("pay", "--qr-image", str(qr), "--yes")
    assert late.returncode == 1, late.stdout
    assert shop.balance() == before
