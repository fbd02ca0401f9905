"""paycode-pos end to end: a live server, a real wallet, codes in synthetic camera video.

No camera: the wallet's code is composed into 720p frames (distorted, among empty frames and
foreign codes), written as a video, and `paycode-pos charge --source video:...` must charge it
exactly once. The numeric code also goes through `--source stdin` as a barcode gun types it.
Under Xvfb the till's OpenCV window is screenshotted and must show the outcome it printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.live_server import REPO_ROOT, LiveServer, start_live_server
from tests.synthetic_frames import Subject, compose_frame, empty_frame, write_video

PASSWORD = "pos test password"
TOP_UP = "500.00"
CLI_TIMEOUT_S = 120


@dataclass
class Till:
    server: LiveServer
    pos_home: Path
    wallet_home: Path
    env: dict[str, str]

    def pos(self, *args: str, stdin: str | None = None, wrap: list[str] | None = None) -> Any:
        command = [*(wrap or []), sys.executable, "-m", "merchant_pos.cli", "--json", *args]
        return _run(command, self.env | {"PAYCODE_POS_HOME": str(self.pos_home)}, stdin)

    def wallet(self, *args: str, stdin: str | None = None) -> dict[str, Any]:
        command = [sys.executable, "-m", "client.cli", "--json", "--home", str(self.wallet_home)]
        done = _run([*command, *args], self.env, stdin)
        assert done.returncode == 0, done.stdout + done.stderr
        reply: dict[str, Any] = json.loads(done.stdout)
        return reply

    def code(self, version: str) -> str:
        return str(self.wallet("code", "--version", version)["code"])

    def balance(self) -> str:
        return str(self.wallet("balance")["accounts"][0]["balance"])


def _run(command: list[str], env: dict[str, str], stdin: str | None) -> Any:
    return subprocess.run(
        command,
        input=stdin if stdin is not None else "",
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def _ok(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stdout + done.stderr
    reply: dict[str, Any] = json.loads(done.stdout)
    return reply


@pytest.fixture(scope="module")
def till(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Till]:
    home = tmp_path_factory.mktemp("pos")
    with start_live_server("sqlite") as server:
        assert (
            server.cli(
                "users",
                "create",
                "carol",
                "--password-stdin",
                "--currency",
                "CNY",
                stdin=PASSWORD + "\n",
            ).returncode
            == 0
        )
        assert server.cli("users", "top-up", "carol", TOP_UP).returncode == 0
        assert server.cli("merchants", "create", "Noodle Bar", "--currency", "CNY").returncode == 0
        terminal = _ok(server.cli("--json", "terminals", "create", "Noodle Bar"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYCODE_")}
        env |= {"PAYCODE_WALLET_PASSPHRASE": "pos test wallet", "PYTHONUNBUFFERED": "1"}
        made = Till(server, home / "till", home / "wallet", env)
        made.wallet(
            "enroll",
            "--server",
            server.url,
            "--user",
            "carol",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )
        _ok(
            made.pos(
                "configure",
                "--server",
                server.url,
                "--key-id",
                terminal["key_id"],
                "--secret-stdin",
                stdin=terminal["secret"] + "\n",
            )
        )
        yield made


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


def test_configure_stores_the_secret_privately(till: Till) -> None:
    settings_file = till.pos_home / "pos.json"
    assert settings_file.stat().st_mode & 0o777 == 0o600
    assert till.pos_home.stat().st_mode & 0o777 == 0o700
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


def test_charge_from_video_charges_once(till: Till, tmp_path: Path) -> None:
    before = till.balance()
    video = _video_with(till.code("v2"), "qr", tmp_path / "till.avi")
    done = till.pos("charge", "--amount", "12.50", "--source", f"video:{video}", "--headless")
    outcome = _ok(done)
    assert outcome["paid"] is True and outcome["payment"]["amount"] == "12.50"
    assert outcome["scan_to_answer_ms"] < 5000
    assert float(before) - float(till.balance()) == pytest.approx(12.50)
    found = _ok(till.pos("query", "--order-id", outcome["merchant_order_id"]))["payments"]
    assert [p["status"] for p in found] == ["succeeded"]
    again = till.pos("charge", "--amount", "1.00", "--source", f"video:{video}", "--headless")
    assert again.returncode == 3
    assert json.loads(again.stdout)["code"] == "code_replayed"
    assert "already used" in json.loads(again.stdout)["message"]


def test_charge_from_barcode_gun_on_stdin(till: Till) -> None:
    code = till.code("v1")
    typed = f"\n4006381333931\nhttps://example.com\n{code}\n"
    outcome = _ok(till.pos("charge", "--amount", "3.00", "--source", "stdin", stdin=typed))
    assert outcome["paid"] is True and outcome["payment"]["code_version"] == "v1"
    replay = till.pos("charge", "--amount", "3.00", "--source", "stdin", stdin=code + "\n")
    assert replay.returncode == 3 and json.loads(replay.stdout)["code"] == "code_replayed"
    nothing = till.pos("charge", "--amount", "3.00", "--source", "stdin", stdin="4006381333931\n")
    assert nothing.returncode == 1
    assert json.loads(nothing.stdout)["error"]["code"] == "no_code_found"


def test_refund_and_query(till: Till) -> None:
    code = till.code("v3")
    paid = _ok(till.pos("charge", "--amount", "20.00", "--source", "stdin", stdin=code + "\n"))
    payment_id = paid["payment"]["payment_id"]
    refund = _ok(till.pos("refund", payment_id, "--amount", "5.00"))
    assert refund["refund"]["amount"] == "5.00"
    shown = _ok(till.pos("query", payment_id))["payments"][0]
    assert shown["refunded"] == "5.00"
    too_much = till.pos("refund", payment_id, "--amount", "50.00")
    assert json.loads(too_much.stdout)["error"]["code"] == "refund_exceeds_payment"


def test_bad_amount_is_refused_before_scanning(till: Till) -> None:
    done = till.pos("charge", "--amount", "-1", "--source", "stdin", stdin=till.code("v1") + "\n")
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["code"] == "invalid_argument"


def test_scan_timeout_is_a_clear_outcome(till: Till, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    video = write_video([empty_frame(rng).image for _ in range(4)], tmp_path / "empty.avi")
    done = till.pos("charge", "--amount", "1.00", "--source", f"video:{video}", "--headless")
    assert done.returncode == 3
    outcome = json.loads(done.stdout)
    assert outcome["code"] == "no_payment_code" and "4 frames scanned" in outcome["message"]


def test_window_screenshot_under_xvfb(till: Till, tmp_path: Path) -> None:
    from merchant_pos.display import render_outcome
    from merchant_pos.till import SaleOutcome

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
    outcome = _ok(done)
    assert outcome["paid"] is True
    screen = cv2.imread(str(shot))
    assert screen is not None and screen.std() > 10, "the screenshot is blank"
    expected = render_outcome(
        SaleOutcome(**{k: v for k, v in outcome.items() if k not in ("payment", "ok")})
    )
    match = cv2.matchTemplate(screen, expected, cv2.TM_CCOEFF_NORMED)
    assert float(match.max()) > 0.9, "the window does not show the PAID screen for 7.25 CNY"
