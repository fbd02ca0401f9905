"""The `phone` fixture: a fresh phone-sized browser context per test (tests/support/web_wallet)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.web_wallet import open_phone


@pytest.fixture
def phone(chromium: Any) -> Iterator[Any]:
    yield from open_phone(chromium)
