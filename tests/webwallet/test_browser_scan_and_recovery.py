"""The web wallet beyond showing codes, on a live SQLite server: scanning a shop's signed QR
from a photo (the page's own decoder), paying it and binding a code to that shop; losing the
browser's storage, in part or whole, and enrolling again in one step; Chinese from the
browser's language."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from paycode.appkit.rendering import qr_image, save_png
from paycode.server.config import STATUSES_TTL_ENV
from paycode.server.database.models import Device, User
from paycode.shared.emv.mpm import crc16_ccitt_false
from tests.support.servers import LiveServer, Server, started
from tests.support.shop import Shop, new_user, ok_json
from tests.support.web_wallet import (
    enroll,
    fill_enrollment,
    open_phone,
    screenshot,
    shown,
    till_charges,
    web_shop,
)

DROP_V2_RECORD = """() => new Promise((resolve, reject) => {
  const request = indexedDB.open('paycode-wallet');
  request.onsuccess = () => {
    const store = request.result.transaction('devices', 'readwrite').objectStore('devices');
    const all = store.getAll();
    all.onsuccess = () => {
      const lost = all.result.find((record) => record.version === 'v2');
      store.delete(lost.device_id).onsuccess = () => resolve(lost.device_id);
    };
  };
  request.onerror = () => reject(request.error);
})"""


@pytest.fixture
def shop(live_sqlite: LiveServer, tmp_path: Path) -> Shop:
    return web_shop(live_sqlite, tmp_path)


def _devices(server: Server, user: str) -> dict[str, bool]:
    """device id -> revoked, for `user`."""
    with server.session() as session:
        user_id = session.scalars(select(User.id).where(User.name == user)).one()
        rows = session.scalars(select(Device).where(Device.user_id == user_id)).all()
        return {row.id: row.revoked_at_s is not None for row in rows}


def test_scan_a_signed_poster_pay_it_and_bind_a_code_to_the_shop(
    shop: Shop, phone: Any, live_sqlite: LiveServer, tmp_path: Path
) -> None:
    user = new_user(live_sqlite, "webscan", top_up="50.00")
    poster = tmp_path / "poster.png"
    ok_json(shop.pos("poster", "--out", str(poster)))  # a static poster: any amount
    page = phone
    enroll(page, live_sqlite, user)
    page.click("#nav-scan")
    page.set_input_files("#scan-file", str(poster))
    page.wait_for_selector("#payee:not([hidden]), #scan-error:not([hidden])")
    assert page.is_hidden("#scan-error"), page.inner_text("#scan-error")
    verdict = page.wait_for_selector("#payee-verdict.verified")
    merchant = next(iter(shop.tills))
    assert verdict.inner_text().startswith(merchant) and "verified" in verdict.inner_text()
    page.fill("#pay-amount", "4.40")
    page.click("#pay-submit")
    page.wait_for_selector(f"#pay-result:has-text('Paid 4.40 CNY to {merchant}')")

    page.click("#bind-code")
    page.wait_for_selector("#binding:not([hidden])")
    assert merchant in page.inner_text("#binding")
    assert page.is_disabled("#versions button[data-version='v1']")
    bound = screenshot(page, "wallet-code-bound.png")
    paid = till_charges(shop, bound, "2.20")
    assert paid["code_version"] == "v3" and paid["amount"] == "2.20"
    assert page.console_errors == []


def test_a_poster_altered_after_signing_is_not_payable(
    shop: Shop, phone: Any, live_sqlite: LiveServer, tmp_path: Path
) -> None:
    """A sticker over the poster: another name, a correct CRC, the server's signature kept."""
    user = new_user(live_sqlite, "webaltered", top_up="50.00")
    signed = ok_json(shop.pos("poster", "--out", str(tmp_path / "real.png")))["qr_payload"]
    name = next(iter(shop.tills))
    changed = signed[:-4].replace(name, "Evil" + name[4:])
    altered = changed + f"{crc16_ccitt_false(changed.encode()):04X}"
    sticker = tmp_path / "sticker.png"
    save_png(qr_image(altered), sticker)
    page = phone
    enroll(page, live_sqlite, user)
    page.click("#nav-scan")
    page.set_input_files("#scan-file", str(sticker))
    line = page.wait_for_selector("#payee-verdict.unverified")
    assert "altered" in line.inner_text()
    assert page.is_disabled("#pay-submit") and page.is_disabled("#bind-code")


def test_part_of_the_storage_lost_re_enrolls_and_revokes_the_lost_device(
    phone: Any, live_sqlite: LiveServer
) -> None:
    user = new_user(live_sqlite, "weblost", top_up="10.00")
    page = phone
    enroll(page, live_sqlite, user)
    lost_id = page.evaluate(DROP_V2_RECORD)
    page.reload()
    warning = page.wait_for_selector("#enroll-lost:not([hidden])")
    assert "v2" in warning.inner_text() and page.is_hidden("#screen-code")
    assert page.input_value("#enroll-user") == user
    fill_enrollment(page, user, pin="")
    page.wait_for_selector("#screen-code:not([hidden])")
    assert shown(page)[0] == "v3"
    devices = _devices(live_sqlite, user)
    assert devices[lost_id] is True
    assert sorted(devices.values()) == [False, False, False, True]


def test_a_wiped_browser_offers_to_revoke_its_old_web_devices(
    chromium: Any, live_sqlite: LiveServer
) -> None:
    user = new_user(live_sqlite, "webwiped", top_up="10.00")
    for _ in range(2):  # the same phone, its storage wiped in between
        for page in open_phone(chromium):
            enroll(page, live_sqlite, user)
            old = _devices(live_sqlite, user)
    offer = page_offer = None
    for page in open_phone(chromium):
        enroll(page, live_sqlite, user)
        offer = page.wait_for_selector("#notice:has(#revoke-others)")
        page_offer = offer.inner_text()
        page.click("#revoke-others")
        page.wait_for_selector("#notice:has-text('Revoked 6 lost device(s).')")
    assert page_offer is not None and "Web wallet" in page_offer
    devices = _devices(live_sqlite, user)
    assert all(devices[device_id] for device_id in old)
    assert sorted(devices.values()).count(False) == 3


@pytest.fixture
def chinese_phone(chromium: Any) -> Iterator[Any]:
    yield from open_phone(chromium, locale="zh-CN")


def test_the_page_speaks_the_browsers_language(chinese_phone: Any, live_sqlite: LiveServer) -> None:
    chinese_phone.goto(f"{live_sqlite.url}/wallet/")
    assert chinese_phone.inner_text("#screen-enroll h1") == "设置本机"
    assert chinese_phone.get_attribute("html", "lang") == "zh-CN"
    assert chinese_phone.inner_text("#enroll-submit") == "启用本机"


@pytest.fixture
def lifecycle_server() -> Iterator[Server]:
    """A server of this test's own (code-version states are server-wide), caching them 0.2 s."""
    with started("sqlite", "process", extra_env={STATUSES_TTL_ENV: "0.2"}) as server:
        yield server


def _set_version(server: Server, action: str, version: str) -> None:
    done = server.cli_in_process("versions", action, version)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_servers_advice_moves_the_phone_off_a_deprecated_version(
    phone: Any, lifecycle_server: Server
) -> None:
    server = lifecycle_server
    user = new_user(server, "webadvice", top_up="10.00")
    _set_version(server, "retire", "v2")
    page = phone
    enroll(page, server, user)  # v2 cannot be enrolled: v3 and v1 are
    assert page.locator("#versions button").count() == 2
    _set_version(server, "activate", "v2")
    _set_version(server, "deprecate", "v1")
    time.sleep(0.3)
    page.click("#nav-wallet")
    advice = page.wait_for_selector("#reenroll:not([hidden])")
    assert "v1 is deprecated" in advice.inner_text()
    page.click("#reenroll-now")  # the phone has v3 already: the v1 device is only revoked
    page.wait_for_selector("#notice:has-text('This phone now uses v3.')")
    assert sorted(_devices(server, user).values()) == [False, True]

    _set_version(server, "deprecate", "v3")
    time.sleep(0.3)
    page.click("#refresh")
    page.wait_for_selector("#reenroll:has-text('v3 is deprecated')")
    page.click("#reenroll-now")  # no v2 device here: the v3 device is rotated into one
    page.wait_for_selector("#notice:has-text('This phone now uses v2.')")
    assert sorted(_devices(server, user).values()) == [False, True, True]
    page.click("#nav-code")
    assert page.locator("#versions button").count() == 1 and shown(page)[0] == "v2"
    assert page.console_errors == []
