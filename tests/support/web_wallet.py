"""Driving the web wallet (/wallet/) in a phone-sized chromium page: enroll, read the code on
screen, screenshot it for the till (tests/webwallet/)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.browser import PNG_MAGIC, TIMEOUT_MS, screenshot_dir
from tests.support.servers import Server
from tests.support.shop import PASSWORD, Shop, ok_json, unique

PIN = "135246"
VIEWPORT = {"width": 390, "height": 844}


def web_shop(server: Server, home: Path) -> Shop:
    """A merchant with one configured till (`paycode-pos`), run in this process against the
    live server's HTTP."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYCODE_")}
    shop = Shop(server, home, env | {"PYTHONUNBUFFERED": "1"}, commands_in_process=True)
    shop.add_till(unique("Web Cafe"))
    return shop


def open_phone(chromium: Any, locale: str = "en-US") -> Iterator[Any]:
    """A 390x844 touch page at twice the pixel density; its console errors are collected in
    `page.console_errors` (a CSP violation shows up there)."""
    context = chromium.new_context(
        viewport=VIEWPORT, device_scale_factor=2, is_mobile=True, has_touch=True, locale=locale
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.console_errors = []
    page.on("console", lambda m: _page_error(m) and page.console_errors.append(m.text))
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
    # No CDN, no font service: every request stays on the server's origin (127.0.0.1).
    page.on(
        "request",
        lambda request: (
            request.url.startswith("http://127.0.0.1:")
            or page.console_errors.append(f"request to another origin: {request.url}")
        ),
    )
    yield page
    context.close()


def _page_error(message: Any) -> bool:
    """An error the page made, not the browser's note of an API refusal the test asked for."""
    refusal = re.match(
        r"Failed to load resource: the server responded with a status of 4", message.text
    )
    return message.type == "error" and refusal is None


def shown(page: Any) -> tuple[str, int, int]:
    """(version, step, counter) of the code on screen, once one is drawn."""
    box = page.wait_for_selector("#code-box[data-counter]")
    return (
        box.get_attribute("data-version"),
        int(box.get_attribute("data-step")),
        int(box.get_attribute("data-counter")),
    )


def next_shown(page: Any, before: tuple[str, int, int]) -> tuple[str, int, int]:
    page.wait_for_function(
        "([step, counter]) => { const box = document.querySelector('#code-box[data-counter]');"
        " return box && (box.dataset.step !== step || box.dataset.counter !== counter); }",
        arg=[str(before[1]), str(before[2])],
    )
    return shown(page)


def screenshot(page: Any, name: str, *, full_page: bool = False) -> Path:
    path = screenshot_dir() / name
    page.screenshot(path=str(path), full_page=full_page)
    assert path.read_bytes().startswith(PNG_MAGIC)
    return path


def till_charges(shop: Shop, image: Path, amount: str) -> dict[str, Any]:
    """`paycode-pos charge --source image:IMAGE`: the payment the till reports as paid."""
    outcome = ok_json(shop.pos("charge", "--amount", amount, "--source", f"image:{image}"))
    assert outcome["paid"] is True
    payment: dict[str, Any] = outcome["payment"]
    return payment


def enroll(page: Any, server: Server, user: str, *, pin: str = PIN) -> None:
    """Open /wallet/, sign in, wait for the first code and for the service worker."""
    page.goto(f"{server.url}/wallet/")
    fill_enrollment(page, user, pin=pin)
    page.wait_for_selector("#screen-code:not([hidden])")
    page.evaluate("navigator.serviceWorker.ready.then(() => true)")


def fill_enrollment(page: Any, user: str, *, pin: str = PIN) -> None:
    page.fill("#enroll-user", user)
    page.fill("#enroll-password", PASSWORD)
    page.fill("#enroll-pin", pin)
    page.click("#enroll-submit")
