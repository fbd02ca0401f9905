"""The web wallet in a real phone-sized browser (Debian's chromium, Playwright) against a live
server, on SQLite and on PostgreSQL.

A customer enrolls at 390x844, the phone goes offline, the app reloads from its service
worker and shows a code; the till (`paycode-pos charge --source image:SCREENSHOT`) charges a
screenshot of the page through the live server, and the same screenshot again is a replay.
The browser's clock crosses a step boundary: a new code, never a repeated (step, counter), also
across reloads and a clock set back. Stored keys refuse to be exported. Back online, a charge
above the password-free limit waits at the till until the page confirms it with the PIN.

The screenshots (code, pending, balance, history) go to build/screenshots/ (or
$PAYCODE_SCREENSHOT_DIR); docs/webwallet/ holds the ones the README shows."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import LiveServer
from tests.support.shop import Shop, new_user, ok_json, set_limits
from tests.support.web_wallet import (
    PIN,
    enroll,
    next_shown,
    screenshot,
    shown,
    till_charges,
    web_shop,
)

STEP_S = 30
PHONE_AHEAD_S = 600
"""The phone's clock runs 10 minutes fast: the wallet's learned offset must make up for it."""
CACHED_URLS = """async () => {
  const urls = [];
  for (const name of await caches.keys()) {
    for (const request of await (await caches.open(name)).keys()) urls.push(request.url);
  }
  return urls;
}"""
EXPORT_PROBE = """async () => {
  const db = await new Promise((resolve, reject) => {
    const request = indexedDB.open('paycode-wallet');
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  const records = await new Promise((resolve, reject) => {
    const request = db.transaction('devices').objectStore('devices').getAll();
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  const results = [];
  for (const record of records) {
    for (const [name, key] of Object.entries(record.keys)) {
      for (const format of ['raw', 'pkcs8', 'jwk']) {
        try {
          await crypto.subtle.exportKey(format, key);
          results.push([record.version, name, format, 'exported']);
        } catch (error) {
          results.push([record.version, name, format, error.name]);
        }
      }
      results.push([record.version, name, 'extractable', String(key.extractable)]);
    }
  }
  return results;
}"""


@pytest.fixture
def shop(live_server: LiveServer, tmp_path: Path) -> Shop:
    return web_shop(live_server, tmp_path)


def test_offline_code_pays_once_and_counters_never_repeat(
    shop: Shop, phone: Any, live_server: LiveServer
) -> None:
    user = new_user(live_server, "webwallet", top_up="100.00")
    page = phone
    page.clock.install(time=time.time() + PHONE_AHEAD_S)
    enroll(page, live_server, user)
    seen = [shown(page)]
    assert seen[0][0] == "v3"

    page.context.set_offline(True)
    page.reload()
    seen.append(shown(page))
    assert page.inner_text("#net").startswith("offline")
    shot = screenshot(page, "wallet-code.png")
    paid = till_charges(shop, shot, "12.50")
    assert paid["status"] == "succeeded" and paid["amount"] == "12.50"
    replay = shop.pos("charge", "--amount", "12.50", "--source", f"image:{shot}")
    assert replay.returncode == 3 and json.loads(replay.stdout)["code"] == "code_replayed"

    page.click("#code-box")  # tap: a new code of the same step
    seen.append(next_shown(page, seen[-1]))
    page.clock.fast_forward(STEP_S * 1000)  # the next time step
    seen.append(next_shown(page, seen[-1]))
    assert seen[-1][1] == seen[-2][1] + 1 and seen[-1][2] == 0
    page.reload()
    seen.append(shown(page))
    page.clock.set_system_time(time.time() + PHONE_AHEAD_S - STEP_S)  # set back a step
    page.reload()
    seen.append(shown(page))
    pairs = [(step, counter) for _, step, counter in seen]
    assert len(set(pairs)) == len(pairs), pairs

    page.click("#versions button[data-version='v1']")
    page.wait_for_selector("#code-box.barcode[data-version='v1']")
    grouped = page.inner_text("#code-digits")
    assert [len(group) for group in grouped.split()] == [4, 4, 4, 4, 4, 4]
    barcode = screenshot(page, "wallet-code-v1.png")
    assert till_charges(shop, barcode, "3.20")["status"] == "succeeded"

    cached = page.evaluate(CACHED_URLS)  # the app's files, never an API answer or a code
    assert cached and all("/wallet/" in url and "/v1/" not in url for url in cached), cached
    assert page.evaluate("location.href") == f"{live_server.url}/wallet/"

    exported = page.evaluate(EXPORT_PROBE)
    secret_keys = [row for row in exported if row[2] != "extractable"]
    assert {row[0] for row in exported} == {"v1", "v2", "v3"}
    assert len(secret_keys) == 3 * 7 and not [row for row in secret_keys if row[3] == "exported"]
    assert {row[3] for row in exported if row[2] == "extractable"} == {"false"}
    assert page.console_errors == []


def test_payment_above_the_limit_waits_for_the_pin_on_the_page(
    shop: Shop, phone: Any, live_server: LiveServer
) -> None:
    user = new_user(live_server, "webpending", top_up="100.00")
    set_limits(live_server, user, payment_max="20.00")
    page = phone
    enroll(page, live_server, user)
    page.click("#versions button[data-version='v2']")
    page.wait_for_selector("#code-box[data-version='v2'][data-counter]")
    shot = screenshot(page, "wallet-code-v2.png")
    with ThreadPoolExecutor(max_workers=1) as pool:
        till = pool.submit(
            shop.spawn_pos, "charge", "--amount", "30.00", "--source", f"image:{shot}",
            "--confirm-wait-s", "60",
        )  # fmt: skip
        page.click("#nav-wallet")
        item = page.wait_for_selector("#pending .pending-item", timeout=30_000)
        assert "30.00 CNY" in item.inner_text()
        screenshot(page, "wallet-pending.png")
        item.query_selector("input").fill("000000")
        item.query_selector("button.confirm").click()
        page.wait_for_selector("#pending .pending-item .error:has-text('pin_invalid')")
        item.query_selector("input").fill(PIN)
        item.query_selector("button.confirm").click()
        done = till.result(timeout=60)
    answer = ok_json(done)
    payment = answer["payment"]
    assert answer["paid"] is True and payment["amount"] == "30.00"
    assert payment["code_version"] == "v2"
    page.wait_for_function("document.querySelector('#balances').innerText.includes('70.00')")
    screenshot(page, "wallet-balance.png")

    ok_json(shop.pos("refund", payment["payment_id"], "--amount", "5.00"))
    page.click("#refresh")
    page.wait_for_selector("#history li[data-payment]:has-text('refunded 5.00 CNY')")
    assert page.inner_text("#balances") == "75.00 CNY"
    page.click("#settings summary")
    page.wait_for_selector("#devices li")
    assert page.inner_text("#devices").count("this phone") == 3
    screenshot(page, "wallet-history.png", full_page=True)
    assert page.console_errors == []
