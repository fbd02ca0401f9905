"""What each reliability test reports: runs, operations, faults injected, anomalies found.

A test asks for the `figures` fixture, adds to it as it goes, and asserts `anomalies == 0` at
the end (after recording, so a failing run is still on the record). Every test writes one JSON
file into build/reliability/ (or $PAYCODE_RELIABILITY_OUT); tests/reliability/report.py turns
them into docs/reliability.md.

The suite's scale comes from PAYCODE_RELIABILITY: "short" (the default, inside `make test`) or
"full" (`make reliability`). Tests read it through `scale.pick(short=..., full=...)`.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODE_ENV = "PAYCODE_RELIABILITY"
OUT_ENV = "PAYCODE_RELIABILITY_OUT"
SEED_ENV = "PAYCODE_RELIABILITY_SEED"
MODES = ("short", "full")
T = TypeVar("T")


@dataclass(frozen=True)
class Scale:
    mode: str

    @property
    def full(self) -> bool:
        return self.mode == "full"

    def pick(self, *, short: T, full: T) -> T:
        return full if self.full else short


@dataclass
class Figures:
    """One test's record. `section` is the issue's numbered item ("1. Bank invariant")."""

    test: str
    section: str = ""
    mode: str = "short"
    seed: int | None = None
    runs: int = 0
    operations: int = 0
    faults: int = 0
    anomalies: int = 0
    details: dict[str, object] = field(default_factory=dict)
    anomaly_notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    passed: bool = False

    def anomaly(self, note: str) -> None:
        """Count an anomaly and keep (at most 20 of) what it was."""
        self.anomalies += 1
        if len(self.anomaly_notes) < 20:
            self.anomaly_notes.append(note[:300])


def current_scale() -> Scale:
    mode = os.environ.get(MODE_ENV, "short")
    if mode not in MODES:
        raise pytest.UsageError(f"{MODE_ENV} must be one of {MODES}, not {mode!r}")
    return Scale(mode)


@pytest.fixture(scope="session")
def scale() -> Scale:
    return current_scale()


def out_dir() -> Path:
    return Path(os.environ.get(OUT_ENV) or REPO_ROOT / "build" / "reliability")


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """The test's random seed: $PAYCODE_RELIABILITY_SEED to replay a failure, else fresh.
    Printed on failure (the figures file holds it too)."""
    chosen = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**32))
    request.node.user_properties.append(("seed", chosen))
    return chosen


@pytest.fixture
def figures(request: pytest.FixtureRequest, scale: Scale) -> Iterator[Figures]:
    record = Figures(test=request.node.nodeid, mode=scale.mode)
    started = time.monotonic()
    yield record
    record.seconds = round(time.monotonic() - started, 1)
    report = getattr(request.node, "rep_call", None)
    record.passed = bool(report is not None and report.passed)
    folder = out_dir()
    folder.mkdir(parents=True, exist_ok=True)
    name = request.node.nodeid.replace("/", "_").replace("::", "__").replace("[", "_").strip("]")
    (folder / f"{name}.json").write_text(json.dumps(asdict(record), indent=1))
    if record.anomalies and record.seed is not None:
        print(
            f"\n{record.test}: {record.anomalies} anomalies; replay with {SEED_ENV}={record.seed}"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep the call phase's report on the item, so `figures` knows whether the test passed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    if report.failed:
        seeds = [value for key, value in item.user_properties if key == "seed"]
        if seeds:
            report.sections.append(("seed", f"replay with {SEED_ENV}={seeds[-1]}"))
