"""Debian's chromium driven by Playwright (no browser download): the `chromium` fixture of the
browser tests (the merchant dashboard, the web wallet), and where their screenshots go.

Without playwright or /usr/bin/chromium the test is skipped on a developer machine and fails
under CI=true (`make setup` installs both)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    # This machine's network is closed: no background calls to Google's services.
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TIMEOUT_MS = 15_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def unavailable(reason: str) -> None:
    """Skip on a developer machine without a browser; fail under CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed: make setup")
    if shutil.which(CHROMIUM) is None:
        unavailable(f"{CHROMIUM} is missing: make system-deps (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def screenshot_dir() -> Path:
    """build/screenshots, or $PAYCODE_SCREENSHOT_DIR."""
    folder = Path(os.environ.get("PAYCODE_SCREENSHOT_DIR") or REPO_ROOT / "build" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
