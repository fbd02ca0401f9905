"""The cashier's keys in the till's window (issue 20): Esc or q while the till scans or waits
for the customer's PIN stops the sale exactly as Ctrl-C does. Before, the window read the key
and dropped it: the till went on scanning (or waiting) until its timeout. A real till process
with its window on its own Xvfb display, a live server, and xdotool pressing the key."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from paycode.merchant_pos.display import WINDOW_TITLE
from paycode.merchant_pos.synthetic_frames import write_video
from tests.endtoend.till_process import TillProcess, code_waiting_for_the_pin, pos_home
from tests.support.servers import Server
from tests.support.shop import (
    Merchant,
    new_merchant,
    use_fast_keystore,
)

EXIT_NOT_PAID = 3
SCANNING = "PAY 1.00 CNY"
WAITING = "Waiting for the customer to confirm with their PIN"
X_START_S = 10.0
DISPLAYS = range(140, 180)
COUNTER_FRAMES = 3000  # a minute at 50 fps: the till shows each one in its window


@pytest.fixture
def display() -> Iterator[str]:
    """A private X server (Xvfb) on the first free display number."""
    for tool in ("Xvfb", "xdotool"):
        assert shutil.which(tool), f"{tool} is missing: `make setup` installs it"
    for number in DISPLAYS:
        if Path(f"/tmp/.X{number}-lock").exists():
            continue
        server = subprocess.Popen(
            ["Xvfb", f":{number}", "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_x(f":{number}", server)
        except AssertionError:
            server.kill()
            server.wait()
            continue
        try:
            yield f":{number}"
        finally:
            server.terminate()
            server.wait(timeout=X_START_S)
        return
    raise AssertionError(f"no free X display in {DISPLAYS}")


def _wait_for_x(name: str, server: subprocess.Popen[bytes]) -> None:
    for _ in range(int(X_START_S / 0.1)):
        if server.poll() is not None:
            raise AssertionError("Xvfb exited")
        done = subprocess.run(
            ["xdotool", "getmouselocation"], env={"DISPLAY": name}, capture_output=True, check=False
        )
        if done.returncode == 0:
            return
        subprocess.run(["sleep", "0.1"], check=True)
    raise AssertionError("Xvfb did not start")


def press(display: str, key: str) -> None:
    """Focus the till's window (once it exists) and press `key`, as a cashier would."""
    env = {"DISPLAY": display}
    found = subprocess.run(
        ["xdotool", "search", "--sync", "--onlyvisible", "--name", WINDOW_TITLE],
        env=env,
        capture_output=True,
        text=True,
        timeout=X_START_S * 2,
        check=True,
    )
    window = found.stdout.split()[0]
    subprocess.run(["xdotool", "windowfocus", "--sync", window], env=env, check=True)
    subprocess.run(["xdotool", "key", key], env=env, check=True)


def _payments(merchant: Merchant, order_id: str) -> list[str]:
    return [p["status"] for p in merchant.till.payments_by_order(order_id)]


@pytest.mark.parametrize("key", ["Escape", "q"])
def test_esc_or_q_while_scanning_stops_the_sale_and_says_nothing_was_charged(
    live_server: Server, tmp_path: Path, display: str, key: str
) -> None:
    merchant = new_merchant(live_server, "Keys Cafe")
    # A counter with no code in view for longer than the test: a still would end the scan
    # after its few repeats, whatever the key did.
    counter = write_video([np.full((180, 320, 3), 90, dtype=np.uint8)] * COUNTER_FRAMES,
                          tmp_path / "counter.avi")  # fmt: skip
    home = pos_home(tmp_path / "pos", live_server.url, merchant)
    with TillProcess.start(
        home, "--amount", "1.00", "--source", f"video:{counter}", "--timeout-s", "60",
        "--windowed", display=display,
    ) as till:  # fmt: skip
        till.wait_for_line(SCANNING)
        press(display, key)
        status, outcome, _stderr = till.finish()
    assert status == EXIT_NOT_PAID, outcome
    assert outcome["outcome"] == "not_paid" and outcome["code"] == "cancelled", outcome
    assert "nothing was charged" in outcome["message"]
    assert _payments(merchant, outcome["order_id"]) == []


def test_esc_while_waiting_for_the_pin_cancels_the_payment(
    live_server: Server, tmp_path: Path, display: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fast_keystore(monkeypatch)
    merchant, image = code_waiting_for_the_pin(live_server, tmp_path, "Keys Waiting Cafe")
    home = pos_home(tmp_path / "pos", live_server.url, merchant)
    with TillProcess.start(
        home, "--amount", "1.00", "--source", f"image:{image}", "--windowed", display=display
    ) as till:
        till.wait_for_line(WAITING)
        press(display, "Escape")
        status, outcome, _stderr = till.finish()
    assert status == EXIT_NOT_PAID and outcome["code"] == "cancelled_by_merchant", outcome
    assert "stopped at the till" in outcome["message"].lower()
    assert _payments(merchant, outcome["order_id"]) == ["cancelled"]
