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
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import PNG_MAGIC, TIMEOUT_MS, screenshot_dir
from tests.support.servers import LiveServer
from tests.support.shop import PASSWORD, Shop, new_user, ok_json, set_limits, unique

PIN = "135246"
VIEWPORT = {"width": 390, "height": 844}
STEP_S = 30
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
def shop(live_server: LiveServer, tmp_path: Path) -> Iterator[Shop]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYCODE_")}
    shop = Shop(live_server, tmp_path, env | {"PYTHONUNBUFFERED": "1"})
    shop.add_till(unique("Web Cafe"))
    yield shop


@pytest.fixture
def phone(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(
        viewport=VIEWPORT, device_scale_factor=2, is_mobile=True, has_touch=True, locale="en-US"
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.console_errors = []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    yield page
    context.close()


def _shown(page: Any) -> tuple[str, int, int]:
    """(version, step, counter) of the code on screen, once one is drawn."""
    box = page.wait_for_selector("#code-box[data-counter]")
    return (
        box.get_attribute("data-version"),
        int(box.get_attribute("data-step")),
        int(box.get_attribute("data-counter")),
    )


def _next_shown(page: Any, before: tuple[str, int, int]) -> tuple[str, int, int]:
    page.wait_for_function(
        "([step, counter]) => { const box = document.querySelector('#code-box[data-counter]');"
        " return box && (box.dataset.step !== step || box.dataset.counter !== counter); }",
        arg=[str(before[1]), str(before[2])],
    )
    return _shown(page)


def _screenshot(page: Any, name: str) -> Path:
    path = screenshot_dir() / name
    page.screenshot(path=str(path))
    assert path.read_bytes().startswith(PNG_MAGIC)
    return path


def _till_charges(shop: Shop, image: Path, amount: str) -> dict[str, Any]:
    """`paycode-pos charge --source image:IMAGE`: the payment the till reports as paid."""
    outcome = ok_json(shop.pos("charge", "--amount", amount, "--source", f"image:{image}"))
    assert outcome["paid"] is True
    payment: dict[str, Any] = outcome["payment"]
    return payment


def _enroll(page: Any, server: LiveServer, user: str) -> None:
    page.goto(f"{server.url}/wallet/")
    page.fill("#enroll-user", user)
    page.fill("#enroll-password", PASSWORD)
    page.fill("#enroll-pin", PIN)
    page.click("#enroll-submit")
    page.wait_for_selector("#screen-code:not([hidden])")
    page.evaluate("navigator.serviceWorker.ready.then(() => true)")


def test_offline_code_pays_once_and_counters_never_repeat(
    shop: Shop, phone: Any, live_server: LiveServer
) -> None:
    user = new_user(live_server, "webwallet", top_up="100.00")
    page = phone
    page.clock.install(time=time.time())
    _enroll(page, live_server, user)
    seen = [_shown(page)]
    assert seen[0][0] == "v3"

    page.context.set_offline(True)
    page.reload()
    seen.append(_shown(page))
    assert page.inner_text("#net").startswith("offline")
    shot = _screenshot(page, "wallet-code.png")
    paid = _till_charges(shop, shot, "12.50")
    assert paid["status"] == "succeeded" and paid["amount"] == "12.50"
    replay = shop.pos("charge", "--amount", "12.50", "--source", f"image:{shot}")
    assert replay.returncode == 3 and json.loads(replay.stdout)["code"] == "code_replayed"

    page.click("#code-box")  # tap: a new code of the same step
    seen.append(_next_shown(page, seen[-1]))
    page.clock.fast_forward(STEP_S * 1000)  # the next time step
    seen.append(_next_shown(page, seen[-1]))
    assert seen[-1][1] == seen[-2][1] + 1 and seen[-1][2] == 0
    page.reload()
    seen.append(_shown(page))
    page.clock.set_system_time(time.time() - STEP_S)  # the clock set back a whole step
    page.reload()
    seen.append(_shown(page))
    pairs = [(step, counter) for _, step, counter in seen]
    assert len(set(pairs)) == len(pairs), pairs

    page.click("#versions button[data-version='v1']")
    page.wait_for_selector("#code-box.barcode[data-version='v1']")
    grouped = page.inner_text("#code-digits")
    assert [len(group) for group in grouped.split()] == [4, 4, 4, 4, 4, 4]
    barcode = _screenshot(page, "wallet-code-v1.png")
    assert _till_charges(shop, barcode, "3.20")["status"] == "succeeded"

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
    _enroll(page, live_server, user)
    _shown(page)
    shot = _screenshot(page, "wallet-code-pending.png")
    with ThreadPoolExecutor(max_workers=1) as pool:
        till = pool.submit(
            shop.spawn_pos, "charge", "--amount", "30.00", "--source", f"image:{shot}",
            "--confirm-wait-s", "60",
        )  # fmt: skip
        page.click("#nav-wallet")
        item = page.wait_for_selector("#pending .pending-item", timeout=30_000)
        assert "30.00 CNY" in item.inner_text()
        _screenshot(page, "wallet-pending.png")
        item.query_selector("input").fill(PIN)
        item.query_selector("button.confirm").click()
        done = till.result(timeout=60)
    answer = ok_json(done)
    assert answer["paid"] is True and answer["payment"]["amount"] == "30.00"
    page.wait_for_function("document.querySelector('#balances').innerText.includes('70.00')")
    page.wait_for_selector("#history li[data-payment]")
    assert "paid" in page.inner_text("#history")
    _screenshot(page, "wallet-balance.png")
    assert page.console_errors == []
