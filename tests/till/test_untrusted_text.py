"""Terminal escape injection (issue 19, item 9): text someone else chose (a scanned QR, a
merchant's name, a server's reply or error detail) reaches the cashier's or the customer's
terminal escaped, so it cannot clear the screen and draw a fake "PAID". Ordinary Unicode
(Chinese) is kept; --json output is escaped by JSON itself."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from sqlalchemy import update

from paycode.appkit import http_client, rendering
from paycode.appkit.console import printable
from paycode.appkit.http_client import WireReply, WireRequest
from paycode.client import devices
from paycode.server.database.models import Merchant
from tests.support.servers import Server, run_in_process
from tests.support.shop import (
    POS_MODULE,
    WALLET_MODULE,
    charge,
    code_of,
    new_merchant,
    new_phone,
    new_user,
    person_env,
    use_fast_keystore,
    wallet_env,
)

ATTACK = "\x1b[2J\x1b[H\x1b[42mPAID 12.50 CNY\x1b[0m\x07\u202egnp.exe\x9b31m\x7f 中文"
"""Clear the screen, home the cursor, draw a green PAID, ring, reverse the text, a C1 CSI."""
HOSTILE_URL = "http://hostile.test:9"


def _raw_controls(text: str) -> list[str]:
    """Every character a terminal would act on rather than show (newlines between lines are
    the program's own)."""
    bidi = {*range(0x202A, 0x202F), *range(0x2066, 0x206A)}
    return [
        char
        for char in text
        if char != "\n" and (ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 or ord(char) in bidi)
    ]


def _assert_shown_escaped(output: str) -> None:
    assert _raw_controls(output) == []
    assert "\\x1b[2J" in output and "\\u202e" in output and "中文" in output


def test_printable_escapes_controls_and_bidi_and_keeps_chinese() -> None:
    assert printable(ATTACK) == (
        "\\x1b[2J\\x1b[H\\x1b[42mPAID 12.50 CNY\\x1b[0m\\x07\\u202egnp.exe\\x9b31m\\x7f 中文"
    )
    assert printable("two\nlines") == "two\\x0alines"
    assert printable("two\nlines", keep_newlines=True) == "two\nlines"
    assert printable("café ☕ 付款") == "café ☕ 付款"
    assert devices.printable(ATTACK, 16) == "\\x1b[2J\\x1b[H\\x1b[42mPAID"  # the device list's cut


def test_a_scanned_qr_carrying_escape_sequences_is_printed_escaped_by_inspect(
    tmp_path: Path,
) -> None:
    image = tmp_path / "hostile.png"
    rendering.save_png(rendering.qr_image(ATTACK), image)
    for args in (["inspect", "--text", ATTACK], ["inspect", "--image", str(image)]):
        done = run_in_process(POS_MODULE, person_env(), *args)
        assert done.returncode == 0, done.stderr
        _assert_shown_escaped(done.stdout + done.stderr)
    as_json = run_in_process(POS_MODULE, person_env(), "--json", "inspect", "--text", ATTACK)
    assert _raw_controls(as_json.stdout) == []
    assert json.loads(as_json.stdout)["codes"][0]["text"].startswith("\x1b[2J")


class _HostileServer:
    """A server (or a man in the middle) answering with escape sequences everywhere."""

    def send(self, request: WireRequest, timeout_s: float) -> WireReply:
        if "/refunds" in request.url:
            problem = {"code": "refund_refused", "detail": ATTACK, "title": ATTACK}
            return WireReply(422, json.dumps(problem).encode(), None)
        payment = {
            "payment_id": f"pay_{ATTACK}",
            "status": ATTACK,
            "amount": "12.50",
            "currency": "CNY",
            "refunded": "0.00",
            "merchant_order_id": ATTACK,
            "failure_code": ATTACK,
        }
        body = payment if "/v1/payments/" in request.url else {"items": [payment]}
        return WireReply(200, json.dumps(body).encode(), None)


@pytest.fixture
def hostile_till(tmp_path: Path) -> dict[str, str]:
    env = person_env() | {"PAYCODE_POS_HOME": str(tmp_path / "pos")}
    secret = base64.b64encode(b"k" * 32).decode()
    configured = run_in_process(
        POS_MODULE,
        env,
        *("configure", "--server", HOSTILE_URL, "--key-id", "term_x", "--secret-stdin"),
        "--offline",  # the hostile server is mounted below, after the set-up
        stdin=secret + "\n",
    )
    assert configured.returncode == 0, configured.stdout + configured.stderr
    http_client.mount(HOSTILE_URL, _HostileServer())
    yield env
    http_client.unmount(HOSTILE_URL)


def test_a_servers_strings_and_error_details_reach_the_till_escaped(
    hostile_till: dict[str, str],
) -> None:
    for args in (["query", "pay_1"], ["query", "--order-id", "o1"], ["refund", "pay_1"]):
        done = run_in_process(POS_MODULE, hostile_till, *args)
        assert _raw_controls(done.stdout + done.stderr) == [], args
        assert "\\x1b[2J" in done.stdout + done.stderr, args


def test_a_merchant_name_with_escape_sequences_reaches_the_wallet_escaped(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is written to the database directly: the operator commands refuse it, but a
    wallet must not trust that of every server it talks to."""
    use_fast_keystore(monkeypatch)
    cafe = new_merchant(server, "Escape Cafe")
    wallet = new_phone(server, tmp_path / "phone", new_user(server), ["v2"])
    assert charge(cafe.till, code_of(wallet, "v2"), "1.00")["status"] == "succeeded"
    with server.session() as session:
        session.execute(update(Merchant).where(Merchant.id == cafe.merchant_id).values(name=ATTACK))
        session.commit()
    env = wallet_env()
    started = time.monotonic()
    done = run_in_process(WALLET_MODULE, env, "--home", str(tmp_path / "phone"), "history")
    assert done.returncode == 0, done.stderr
    _assert_shown_escaped(done.stdout)
    for args in (["pay", "--qr-text", ATTACK, "--yes"], ["code", "--bind-payload", ATTACK]):
        refused = run_in_process(WALLET_MODULE, env, "--home", str(tmp_path / "phone"), *args)
        assert refused.returncode == 1 and _raw_controls(refused.stdout + refused.stderr) == []
    assert time.monotonic() - started < 10
