"""The figures harness itself: a record is written for every test that asks for it, with the
mode, the seed and whether the test passed."""

from __future__ import annotations

import json

import pytest

from tests.reliability.figures import OUT_ENV, Figures, Scale, out_dir


def test_a_record_is_written(figures: Figures, seed: int, scale: Scale) -> None:
    figures.section = "0. Harness"
    figures.seed = seed
    figures.runs, figures.operations = 1, 3
    figures.anomaly("example")
    assert figures.anomalies == 1 and figures.anomaly_notes == ["example"]
    figures.anomalies, figures.anomaly_notes = 0, []
    assert scale.pick(short=1, full=2) == (2 if scale.full else 1)


def test_the_previous_record_is_on_disk() -> None:
    written = sorted(out_dir().glob("*test_harness.py__test_a_record_is_written.json"))
    assert written, f"no record in {out_dir()} (${OUT_ENV})"
    record = json.loads(written[-1].read_text())
    assert record["section"] == "0. Harness" and record["passed"] is True
    assert record["operations"] == 3 and isinstance(record["seed"], int)


def test_an_unknown_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.reliability.figures import MODE_ENV, current_scale

    monkeypatch.setenv(MODE_ENV, "medium")
    with pytest.raises(pytest.UsageError):
        current_scale()
