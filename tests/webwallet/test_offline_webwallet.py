"""The web wallet holds and spends an offline allowance against a live server (docs/offline.md
§8, "phone wallet and CLI wallet hold and spend an allowance"), on SQLite and PostgreSQL.

In a phone-sized chromium page a customer takes an allowance with the PIN, shows offline (v4)
codes, and hands the rest back. Each code is read off a screenshot of the page as a till's
camera reads it; one is charged online by the real terminal client, another is accepted by a
till whose line is down (the till's own decision over the keys it fetched from the server)
and forwarded by the till's sync. Balances are read from the server's ledger to the minor
unit; the books reconcile at the end.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from paycode.appkit.decoding import decode_image_file
from paycode.merchant_pos import offline_keys, offline_sync
from paycode.merchant_pos.offline_log import open_log
from paycode.merchant_pos.offline_records import Acceptance
from paycode.merchant_pos.offline_sale import OfflineRequest, decide
from paycode.server.database.offline_models import ESCROW
from paycode.shared.versions import v4_offline
from tests.support.books import assert_books_clean, balance_minor
from tests.support.servers import LiveServer
from tests.support.shop import new_merchant, new_user, user_id
from tests.support.web_wallet import PIN, enroll, screenshot

READS_MAX = 40
READ_PAUSE_S = 0.25
STORED_ALLOWANCES = """async () => {
  const db = await new Promise((resolve, reject) => {
    const request = indexedDB.open('paycode-wallet');
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  return new Promise((resolve, reject) => {
    const request = db.transaction('allowances').objectStore('allowances').getAll();
    request.onsuccess = () => resolve(request.result.map((record) => ({
      id: record.allowance_id,
      keys: record.certificates.filter((entry) => entry.seed).length,
      returning: Boolean(record.returning),
    })));
    request.onerror = () => reject(request.error);
  });
}"""


def code_on_screen(page: Any, name: str) -> str:
    """The offline code's text, read off a screenshot of the page as a till's camera reads it."""
    decoded = decode_image_file(screenshot(page, name))
    assert [d.format for d in decoded] == ["qr"], decoded
    text = decoded[0].text
    assert text.startswith(v4_offline.PREFIX) and len(text) == v4_offline.LENGTH
    return text


def next_offline_code(page: Any, before: str, name: str) -> str:
    """Tap the code for a new offline one and read it once it is drawn. A code of the next
    certificate may have the same step and counter as the one before: the text tells."""
    page.click("#code-box")
    for _ in range(READS_MAX):
        decoded = decode_image_file(screenshot(page, name))
        if decoded and decoded[0].text != before:
            return code_on_screen(page, name)
        time.sleep(READ_PAUSE_S)
    raise AssertionError("no new offline code was drawn after the tap")


def wait_balance(page: Any, text: str) -> None:
    page.wait_for_function(
        "(text) => document.querySelector('#balances').innerText.trim() === text", arg=text
    )


def test_web_wallet_takes_and_spends(live_server: LiveServer, phone: Any, tmp_path: Path) -> None:
    name = new_user(live_server, "weboffline", top_up="200.00")
    user = user_id(live_server, name)
    page = phone
    enroll(page, live_server, user=name)

    page.click("#nav-wallet")
    wait_balance(page, "200.00 CNY")
    page.select_option("#offline-take-amount", "10000")
    page.fill("#offline-pin", PIN)
    page.click("#offline-take")
    page.wait_for_selector("#offline-line:has-text('100.00 CNY left of 100.00 CNY')")
    wait_balance(page, "100.00 CNY")
    ((allowance, keys, returning),) = [
        (r["id"], r["keys"], r["returning"]) for r in page.evaluate(STORED_ALLOWANCES)
    ]
    assert (keys, returning) == (4, False)
    assert (
        balance_minor(live_server, "user", user),
        balance_minor(live_server, ESCROW, allowance),
    ) == (
        10_000,
        10_000,
    )
    screenshot(page, "wallet-offline-allowance.png", full_page=True)

    # (a) An offline code charged online: the server pays it from escrow.
    page.click("#nav-code")
    page.wait_for_selector("#offline-code:not([hidden])")
    page.fill("#offline-code-amount", "12.50")
    page.click("#code-offline")
    page.wait_for_selector("#code-box[data-version='v4'][data-counter]")
    page.wait_for_selector("#code-status:has-text('up to 12.50 CNY')")
    # 69 modules to v3's 57: drawn 69/57 wider, so each module is as wide (docs/offline.md 3.3).
    drawn_width, viewport_width = page.evaluate(
        "[document.getElementById('code-canvas').getBoundingClientRect().width, innerWidth]"
    )
    assert drawn_width == pytest.approx(min(0.96 * viewport_width, 557), abs=1)
    first = code_on_screen(page, "wallet-offline-code.png")
    online_till = new_merchant(live_server, "Web Online Cafe")
    paid = online_till.till.charge(code=first, amount="12.50", currency="CNY")
    assert paid["status"] == "succeeded", paid
    assert balance_minor(live_server, ESCROW, allowance) == 10_000 - 1250
    assert balance_minor(live_server, "merchant", online_till.merchant_id) == 1250

    # (b) A new offline code (a tap) at a till whose line is down, synced once it is back.
    offline_till = new_merchant(live_server, "Web Offline Noodles")
    client = offline_till.till
    pos_home = tmp_path / "pos"
    offline_keys.fetch(client, pos_home, local_now_s=time.time())
    second = next_offline_code(page, first, "wallet-offline-code-2.png")
    keys_copy = offline_keys.load(pos_home)
    local_now_s = time.time()
    assert keys_copy is not None
    request = OfflineRequest(
        second, 1000, "CNY", f"order-{os.urandom(4).hex()}",
        keys_copy.server_time(local_now_s), local_now_s,
    )  # fmt: skip
    with open_log(pos_home) as log:
        accepted = decide(request, keys_copy, log)
        assert isinstance(accepted, Acceptance), accepted
        outcome = offline_sync.sync(client, log, pos_home, now_s=time.time())
        assert log.unsynced() == []
    assert [(s.record.id, s.synced.result, s.synced.paid_minor) for s in outcome.settled] == [
        (accepted.id, "paid", 1000)
    ]
    assert balance_minor(live_server, "merchant", offline_till.merchant_id) == 1000
    assert balance_minor(live_server, ESCROW, allowance) == 10_000 - 1250 - 1000

    # A third code is shown and never paid: its 12.50 stays reserved.
    next_offline_code(page, second, "wallet-offline-code-3.png")
    page.click("#nav-wallet")
    page.wait_for_selector("#offline-line:has-text('62.50 CNY left of 100.00 CNY')")

    # Hand-back: back at once = 100.00 - 22.50 spent - (2.50 left of the offline sale's
    # reservation + 12.50 of the unused code) = 62.50.
    # It cannot be undone, so it is asked first; "Cancel" keeps the allowance and its keys.
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click("#offline-return")
    page.wait_for_selector("#offline-line:has-text('62.50 CNY left of 100.00 CNY')")
    assert len(page.evaluate(STORED_ALLOWANCES)) == 1 and asked[0].startswith("Hand back")
    assert balance_minor(live_server, "user", user) == 10_000
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.click("#offline-return")
    page.wait_for_selector("#notice:has-text('62.50 CNY back on your balance; 15.00 CNY stays')")
    wait_balance(page, "162.50 CNY")
    page.wait_for_selector("#offline-line:has-text('No offline allowance')")
    assert page.is_hidden("#offline-return") and page.is_hidden("#offline-return-waiting")
    assert page.evaluate(STORED_ALLOWANCES) == []  # keys and record gone
    assert balance_minor(live_server, "user", user) == 16_250
    assert balance_minor(live_server, ESCROW, allowance) == 1500
    page.click("#nav-code")
    page.wait_for_selector("#code-box[data-version='v3'][data-counter]")
    assert page.is_hidden("#offline-code")  # nothing left to spend offline
    assert page.console_errors == []
    assert_books_clean(live_server)
