"""paycode-pos end to end: a real server, a real wallet, codes in synthetic camera video.

No camera: the wallet's code is composed into 720p frames (distorted, among empty frames and
foreign codes), written as a video, and `paycode-pos charge --source video:...` must charge it
exactly once. The numeric code also goes through `--source stdin` as a barcode gun types it.
The commands run in this process against the app in this process (what they print and what the
ledger does is the subject); under Xvfb the till is a process of its own, over real HTTP to a
live server, and its OpenCV window is screenshotted and must show the outcome it printed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from paycode.merchant_pos.synthetic_frames import Subject, compose_frame, empty_frame, write_video
from tests.support.servers import Server
from tests.support.shop import Shop, ok_json, open_shop

TOP_UP = "500.00"


@pytest.fixture(scope="module")
def till(app_sqlite: Server, tmp_path_factory: pytest.TempPathFactory) -> Shop:
    home = tmp_path_factory.mktemp("pos")
    return open_shop(app_sqlite, home, merchants=["Noodle Bar"], top_up=TOP_UP)


@pytest.fixture(scope="module")
def live_till(live_sqlite: Server, tmp_path_factory: pytest.TempPathFactory) -> Shop:
    """The same shop with a live server: its commands run in this process over real HTTP,
    except the one wrapped in xvfb-run, a process."""
    home = tmp_path_factory.mktemp("pos-live")
    return open_shop(live_sqlite, home, merchants=["Noodle Bar"], top_up=TOP_UP, in_process=True)


def _video_with(code_text: str, symbology: str, path: Path) -> Path:
    """Empty frames, a foreign QR, then the code for 12 frames under changing distortions."""
    rng = np.random.default_rng(7)
    frames = [empty_frame(rng).image for _ in range(5)]
    menu = Subject("https://example.com/menu", "qr", "foreign")
    frames += [compose_frame(menu, "clean", rng).image for _ in range(3)]
    subject = Subject(code_text, symbology, "payment")
    for distortion in ("perspective", "blur", "noise", "glare", "moire", "rotation") * 2:
        frames.append(compose_frame(subject, distortion, rng).image)
    frames += [empty_frame(rng).image for _ in range(3)]
    return write_video(frames, path)


def test_configure_stores_the_secret_privately(till: Shop) -> None:
    settings_file = till.tills["Noodle Bar"] / "pos.json"
    assert settings_file.stat().st_mode & 0o777 == 0o600
    assert till.tills["Noodle Bar"].stat().st_mode & 0o777 == 0o700
    bad = till.pos(
        "configure",
        "--server",
        till.server.url,
        "--key-id",
        "term_x",
        "--secret-stdin",
        stdin="not base64!\n",
    )
    assert bad.returncode == 1 and json.loads(bad.stdout)["error"]["code"] == "invalid_argument"
    assert "not base64" not in bad.stdout + bad.stderr


def test_charge_from_video_charges_once(till: Shop, tmp_path: Path) -> None:
    before = till.balance()
    video = _video_with(till.code("v2"), "qr", tmp_path / "till.avi")
    done = till.pos("charge", "--amount", "12.50", "--source", f"video:{video}", "--headless")
    outcome = ok_json(done)
    assert outcome["paid"] is True and outcome["payment"]["amount"] == "12.50"
    assert outcome["scan_to_answer_ms"] < 5000
    assert float(before) - float(till.balance()) == pytest.approx(12.50)
    found = ok_json(till.pos("query", "--order-id", outcome["merchant_order_id"]))["payments"]
    assert [p["status"] for p in found] == ["succeeded"]
    again = till.pos("charge", "--amount", "1.00", "--source", f"video:{video}", "--headless")
    assert again.returncode == 3
    assert json.loads(again.stdout)["code"] == "code_replayed"
    assert "already used" in json.loads(again.stdout)["message"]


def test_charge_from_barcode_gun_on_stdin(till: Shop) -> None:
    code = till.code("v1")
    typed = f"\n4006381333931\nhttps://example.com\n{code}\n"
    outcome = ok_json(till.pos("charge", "--amount", "3.00", "--source", "stdin", stdin=typed))
    assert outcome["paid"] is True and outcome["payment"]["code_version"] == "v1"
    replay = till.pos("charge", "--amount", "3.00", "--source", "stdin", stdin=code + "\n")
    assert replay.returncode == 3 and json.loads(replay.stdout)["code"] == "code_replayed"
    nothing = till.pos("charge", "--amount", "3.00", "--source", "stdin", stdin="4006381333931\n")
    assert nothing.returncode == 3  # NOT PAID, as a camera that saw no code (issue 20)
    assert json.loads(nothing.stdout)["code"] == "no_payment_code"


def test_refund_and_query(till: Shop) -> None:
    code = till.code("v3")
    paid = ok_json(till.pos("charge", "--amount", "20.00", "--source", "stdin", stdin=code + "\n"))
    payment_id = paid["payment"]["payment_id"]
    refund = ok_json(till.pos("refund", payment_id, "--amount", "5.00"))
    assert refund["refund"]["amount"] == "5.00"
    shown = ok_json(till.pos("query", payment_id))["payments"][0]
    assert shown["refunded"] == "5.00"
    too_much = till.pos("refund", payment_id, "--amount", "50.00")
    assert json.loads(too_much.stdout)["error"]["code"] == "refund_exceeds_payment"


def test_bad_amount_is_refused_before_scanning(till: Shop) -> None:
    done = till.pos("charge", "--amount", "-1", "--source", "stdin", stdin=till.code("v1") + "\n")
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["code"] == "invalid_argument"


def test_scan_timeout_is_a_clear_outcome(till: Shop, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    video = write_video([empty_frame(rng).image for _ in range(4)], tmp_path / "empty.avi")
    done = till.pos("charge", "--amount", "1.00", "--source", f"video:{video}", "--headless")
    assert done.returncode == 3
    outcome = json.loads(done.stdout)
    assert outcome["code"] == "no_payment_code" and "4 frames scanned" in outcome["message"]


def test_window_screenshot_under_xvfb(live_till: Shop, tmp_path: Path) -> None:
    """paycode-pos as a process (under xvfb-run), charging over real HTTP: the till's wire."""
    till = live_till
    from paycode.merchant_pos.display import render_outcome
    from paycode.merchant_pos.till import SaleOutcome

    assert shutil.which("xvfb-run"), "Debian's xvfb is missing: `make setup` installs it"
    video = _video_with(till.code("v2"), "qr", tmp_path / "shown.avi")
    shot = tmp_path / "screen.png"
    xvfb = ["xvfb-run", "-a", "-s", "-screen 0 1600x900x24"]
    done = till.pos(
        "charge",
        "--amount",
        "7.25",
        "--source",
        f"video:{video}",
        "--hold-s",
        "0",
        "--screenshot",
        str(shot),
        wrap=xvfb,
    )
    outcome = ok_json(done)
    assert outcome["paid"] is True
    screen = cv2.imread(str(shot))
    assert screen is not None and screen.std() > 10, "the screenshot is blank"
    expected = render_outcome(
        SaleOutcome(
            **{
                k: v
                for k, v in outcome.items()
                if k not in ("payment", "ok", "outcome", "order_id")
            }
        ),
        (screen.shape[1], screen.shape[0]),
    )
    assert np.abs(screen.astype(np.int16) - expected).mean() < 1, (
        "the window does not show the PAID screen for 7.25 CNY over the whole screen"
    )
