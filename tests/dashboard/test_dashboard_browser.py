"""The merchant dashboard in a real browser: Debian's chromium, driven by Playwright, against a
live server. Log in, see a payment made in the test, refund part of it, download the day's
settlement, and save a screenshot (build/screenshots/dashboard.png, or $PAYCODE_SCREENSHOT_DIR).

The page must load with no console error: a Content-Security-Policy violation (an inline style
or script sneaking in) shows up there first."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest

from paycode.server.database.models import Payment
from tests.support.browser import PNG_MAGIC, TIMEOUT_MS, screenshot_dir
from tests.support.dashboard import DASHBOARD_PASSWORD, dashboard_merchant
from tests.support.servers import LiveServer
from tests.support.shop import charge, code_of, new_phone, new_user, use_fast_keystore


def _screenshot_path() -> Path:
    return screenshot_dir() / "dashboard.png"


def test_log_in_see_refund_download(
    chromium: Any, live_sqlite: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fast_keystore(monkeypatch)
    shop = dashboard_merchant(live_sqlite, "Tea House")
    user = new_user(live_sqlite, top_up="50.00")
    wallet = new_phone(live_sqlite, tmp_path / "phone", user, ["v1", "v3"])
    paid = charge(shop.till, code_of(wallet, "v3"), "8.80")
    charge(shop.till, code_of(wallet, "v1"), "1.20")
    payment_id = paid["payment_id"]

    context = chromium.new_context(accept_downloads=True, viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    console_errors: list[str] = []
    page.on(
        "console", lambda message: message.type == "error" and console_errors.append(message.text)
    )
    try:
        page.goto(f"{live_sqlite.url}/dashboard/")
        assert page.url.endswith("/dashboard/login")
        page.fill("input[name=name]", shop.name)
        page.fill("input[name=password]", DASHBOARD_PASSWORD)
        page.click("button:has-text('Log in')")
        page.wait_for_url("**/dashboard/")

        assert page.inner_text("#volume-CNY") == "10.00"
        assert page.inner_text("#paid-count") == "2"
        row = page.locator(f"tr#{payment_id}")
        assert "8.80 CNY" in row.inner_text()
        assert page.locator("#per-hour rect.bar[data-count='2']").count() == 1
        assert (
            page.evaluate("getComputedStyle(document.body).backgroundColor") != "rgba(0, 0, 0, 0)"
        )

        row.locator("input[name=amount]").fill("3.30")
        row.locator("button:has-text('Refund')").click()
        page.wait_for_selector(".notice")
        assert payment_id in page.inner_text(".notice")
        assert page.locator(f"tr#{payment_id} td.refunded").inner_text() == "3.30"
        assert page.locator(f"tr#{payment_id} input[name=amount]").input_value() == "5.50"
        with live_sqlite.session() as session:
            stored = session.get(Payment, payment_id)
            assert stored is not None and stored.refunded_minor == 330

        with page.expect_download() as download_info:
            page.click("#download-settlement")
        download = download_info.value
        assert download.suggested_filename.startswith(f"settlement-{shop.merchant_id}-")
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)
        rows = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
        movements = {(row["type"], row["payment_id"], row["amount_minor"]) for row in rows}
        assert ("charge", payment_id, "880") in movements
        assert ("refund", payment_id, "-330") in movements

        shot = _screenshot_path()
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 10_000
        assert console_errors == []
    finally:
        context.close()
