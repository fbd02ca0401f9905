"""A code issued by the server in the web wallet (docs/webwallet.md, "Codes issued online";
docs/spec.md §14), in a real phone-sized browser against a live server, on SQLite and on
PostgreSQL.

The customer taps "Get a code from the server": the page shows the server's code with the note
that it was issued online, the till (`paycode-pos charge --source image:SCREENSHOT`) charges a
screenshot of it, and the payment is marked issued online. Then the phone's clock is set back
behind the codes it already showed, so it cannot make a code itself: the page falls back to the
server on its own and says why."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import LiveServer
from tests.support.shop import Shop, new_user
from tests.support.web_wallet import (
    enroll,
    next_shown,
    screenshot,
    shown,
    till_charges,
    web_shop,
)

STEP_S = 30
V1_COUNTER_MAX = 9
"""A v1 code's counter runs 0-9 in a step (docs/spec.md §2)."""
SERVER_CODE = "#code-box[data-issued-online='true']"


@pytest.fixture
def shop(live_server: LiveServer, tmp_path: Path) -> Shop:
    return web_shop(live_server, tmp_path)


def test_a_server_code_is_shown_as_such_and_pays_at_the_till(
    shop: Shop, phone: Any, live_server: LiveServer
) -> None:
    user = new_user(live_server, "webonline", top_up="100.00")
    page = phone
    page.clock.install(time=time.time())
    enroll(page, live_server, user)
    shown(page)  # the phone's own first code

    page.click("#code-server")
    page.wait_for_selector(SERVER_CODE)
    assert page.get_attribute("#code-box", "data-version") == "v2"
    page.wait_for_function(
        "() => document.querySelector('#code-status').textContent"
        ".startsWith('Issued by the server — online.')"
    )
    paid = till_charges(shop, screenshot(page, "wallet-code-online.png"), "4.20")
    assert paid["status"] == "succeeded" and paid["issued_online"] is True

    # Back to the phone's own codes, v1, on a stopped clock: its ten codes of one step are
    # used up, so the eleventh tap cannot make one here and the page asks the server.
    page.click("#versions button[data-version='v1']")
    page.wait_for_selector("#code-box[data-version='v1'][data-counter]")
    seen = shown(page)
    page.clock.pause_at((time.time() // STEP_S + 1) * STEP_S + 1)
    page.click("#code-box")
    seen = next_shown(page, seen)
    while seen[2] < V1_COUNTER_MAX:
        page.click("#code-box")
        seen = next_shown(page, seen)
    page.click("#code-box")
    page.wait_for_selector(SERVER_CODE)
    note = page.inner_text("#code-note")
    assert note.startswith("This phone cannot make a code now (") and "issued by the server" in note
    paid = till_charges(shop, screenshot(page, "wallet-code-online-fallback.png"), "1.30")
    assert paid["issued_online"] is True
    assert page.console_errors == []
