"""What `paycode-pos charge --present` shows: the order's QR in the till's window (under Xvfb,
a real screenshot decoded back to the order's payload), or drawn on stderr without a display;
and its exit status and JSON. The server is the fake of tests/support/orders.py; against a
live one, see tests/endtoend/test_present_order.py."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import cv2
import pytest

from paycode.appkit.decoding import decode_image_file
from paycode.merchant_pos import cli, settings
from paycode.merchant_pos.display import render_present
from tests.support.orders import (
    MERCHANT_ORDER_ID,
    PAID,
    PAYLOAD,
    FakeOrders,
    FakeSettings,
    order_of,
)
from tests.support.servers import run_command


def test_present_screen_decodes_to_the_payload(tmp_path: Path) -> None:
    """The picture itself (no display): the QR reads back, and high contrast (pure black and
    white modules) with the amount and countdown beside it."""
    image = render_present(PAYLOAD, "12.50 CNY", 87.4, "order INV-1042")
    assert image.shape[:2] == (720, 1280)
    path = tmp_path / "present.png"
    cv2.imwrite(str(path), image)
    assert [decoded.text for decoded in decode_image_file(path)] == [PAYLOAD]
    later = render_present(PAYLOAD, "12.50 CNY", 12.0, "order INV-1042")
    changed = (image != later).any(axis=2)
    assert changed.any() and not changed[:, : image.shape[1] // 2].any(), "only the countdown"


def test_window_shows_the_order_qr_under_xvfb(tmp_path: Path) -> None:
    """paycode-pos in a process under xvfb-run, its real window, a real grab of the X screen:
    the screenshot decodes to the order's payload, and once it is paid the till says so."""
    assert shutil.which("xvfb-run"), "Debian's xvfb is missing: `make setup` installs it"
    shot = tmp_path / "screen.png"
    xvfb = ["xvfb-run", "-a", "-s", "-screen 0 1600x900x24"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYCODE_")}
    done = run_command([*xvfb, sys.executable, "-m", "tests.support.orders", str(shot)], env)
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["paid"] is True and outcome["amount"] == "12.50"
    assert outcome["merchant_order_id"] == MERCHANT_ORDER_ID
    screen = cv2.imread(str(shot))
    assert screen is not None and screen.shape[:2] == (900, 1600)
    assert [decoded.text for decoded in decode_image_file(shot)] == [PAYLOAD]


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> FakeOrders:
    server = FakeOrders([order_of(), PAID])
    monkeypatch.setattr(settings, "load", lambda _home: FakeSettings(server))
    monkeypatch.delenv("DISPLAY", raising=False)
    return server


def _charge(*args: str) -> int:
    return cli.main(["--json", "charge", "--amount", "12.50", "--present", *args])


def test_headless_present_draws_the_qr_on_stderr(
    fake_server: FakeOrders, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _charge("--present-wait-s", "30") == 0
    out, err = capsys.readouterr()
    outcome = json.loads(out)
    assert outcome["ok"] and outcome["paid"] is True and outcome["amount"] == "12.50"
    assert PAYLOAD in err and "█" in err and "PAY 12.50 CNY" in err
    assert PAYLOAD not in out, "stdout is the outcome only"
    assert fake_server.created[0]["expires_in_s"] == 90


def test_present_not_paid_exits_3(
    fake_server: FakeOrders, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_server.polls = [order_of("expired")]
    assert _charge() == 3
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["paid"] is False and outcome["code"] == "order_expired"


@pytest.mark.parametrize(
    "args",
    [("--present-wait-s", "0"), ("--present-wait-s", "601"), ("--source", "stdin")],
)
def test_present_options_are_checked_first(
    fake_server: FakeOrders, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    assert _charge(*args) == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "invalid_argument"
    assert fake_server.created == [], "no order for a refused command line"


def test_help_explains_present(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["charge", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--present" in text and "customer scans the till" in text
    assert "--present-wait-s" in text and "still PAID" in text
