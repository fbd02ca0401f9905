"""The counter screens in the till's real window under Xvfb (tests/support/counter.py in a
process under xvfb-run, real grabs of the X screen): the window covers the whole screen with no
toolkit chrome, and shows exactly what the screens draw. The pixels of each screen are checked
in test_counter_screen.py; here, that the customer sees them."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from paycode.merchant_pos import cli, present_sale, settings
from tests.support import counter
from tests.support.orders import PAID, FakeOrders, FakeSettings
from tests.support.servers import run_command

SCREEN_PX = (1600, 900)
QT_TOOLBAR_GREY = 240
"""Qt's toolbar and status bar are light grey: none of the screens has a row of it."""


@pytest.fixture(scope="module")
def grabs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process shows every screen: a window (and an X server) per screen would cost
    seconds each."""
    assert shutil.which("xvfb-run"), "Debian's xvfb is missing: `make setup` installs it"
    out = tmp_path_factory.mktemp("counter")
    xvfb = ["xvfb-run", "-a", "-s", f"-screen 0 {SCREEN_PX[0]}x{SCREEN_PX[1]}x24"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYCODE_")}
    done = run_command([*xvfb, sys.executable, "-m", "tests.support.counter", str(out)], env)
    assert done.returncode == 0, done.stdout + done.stderr
    sizes = json.loads(done.stdout)
    assert sizes["size"] == list(SCREEN_PX), "the window's size is not the screen's"
    assert sizes["windowed_size"] == [1280, 720]
    return out


@pytest.fixture(scope="module")
def drawn() -> dict[str, NDArray[np.uint8]]:
    return counter.screens(SCREEN_PX)


@pytest.mark.parametrize("name", counter.SCREENS)
def test_the_window_is_full_screen_without_a_toolbar(
    grabs: Path, drawn: dict[str, NDArray[np.uint8]], name: str
) -> None:
    """OpenCV's default window was sized to the picture, with Qt's zoom and save toolbar on
    top; the till's window is the whole screen and shows the screen pixel for pixel."""
    grab = cv2.imread(str(grabs / f"{name}.png"))
    assert grab is not None and grab.shape == (SCREEN_PX[1], SCREEN_PX[0], 3)
    expected = drawn[name]
    difference = np.abs(grab.astype(np.int16) - expected)
    assert float(difference.mean()) < 1.0, f"the window does not show the {name} screen whole"
    grey_rows = (np.abs(grab.astype(np.int16) - QT_TOOLBAR_GREY) < 4).all(axis=(1, 2))
    assert not grey_rows.any(), "a toolbar or status bar is drawn"


def test_windowed_is_a_smaller_window_still_without_a_toolbar(grabs: Path) -> None:
    """`charge --windowed` (development): the screen drawn at 1280x720 in a window that does
    not cover the screen, still with no toolbar or status bar around the picture."""
    grab = cv2.imread(str(grabs / counter.WINDOWED_GRAB))
    assert grab is not None and grab.shape == (SCREEN_PX[1], SCREEN_PX[0], 3)
    expected = counter.screens((1280, 720))["paid"]
    match = cv2.matchTemplate(grab, expected, cv2.TM_SQDIFF_NORMED)
    _, _, (left, top), _ = cv2.minMaxLoc(match)
    assert float(match.min()) < 0.001, "the PAID screen is not shown whole"
    shown = grab[max(0, top - 40) : top + 720 + 40, max(0, left - 40) : left + 1280 + 40]
    grey_rows = (np.abs(shown.astype(np.int16) - QT_TOOLBAR_GREY) < 4).all(axis=(1, 2))
    assert not grey_rows.any(), "a toolbar or status bar is drawn"


class _RecordingWindow:
    """Stands in for TillWindow in-process: records how it was opened, shows nothing."""

    opened: ClassVar[list[bool]] = []
    size = (1280, 720)

    def __init__(self, *, windowed: bool = False) -> None:
        self.opened.append(windowed)

    def show(self, _image: object) -> None: ...

    def hold(self, _image: object, _seconds: float) -> bool:
        return False

    def close(self) -> None: ...


@pytest.mark.parametrize(("flag", "windowed"), [((), False), (("--windowed",), True)])
def test_charge_opens_the_full_screen_window_unless_windowed(
    monkeypatch: pytest.MonkeyPatch, flag: tuple[str, ...], windowed: bool
) -> None:
    monkeypatch.setattr(settings, "load", lambda _home: FakeSettings(FakeOrders([PAID])))
    monkeypatch.setattr(present_sale, "display_available", lambda _headless: True)
    monkeypatch.setattr(present_sale, "TillWindow", _RecordingWindow)
    monkeypatch.setattr(_RecordingWindow, "opened", [])
    argv = ["--json", "charge", "--amount", "12.50", "--present", "--hold-s", "0", *flag]
    assert cli.main(argv) == 0
    assert _RecordingWindow.opened == [windowed]
