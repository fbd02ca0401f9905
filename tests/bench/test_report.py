"""bench/report.py turns the benchmarks' JSON into docs/benchmarks.md: checked on made-up
figures whose ratios and verdicts are known, so a report change cannot silently misstate one."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import charge_targets, report, report_targets
from bench.charge_targets import OpenRun
from paycode.server.cli import THREADS_DEFAULT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(kind: str, backend: str, workers: int, clients: int, rate: float, **extra: Any) -> dict:
    return {
        "kind": kind,
        "backend": backend,
        "workers": workers,
        "clients": clients,
        "rate_per_s": rate,
        "round": 1,
        "instances": 1,
        "p50_ms": 10.0,
        "p95_ms": 15.0,
        "p99_ms": 20.0,
        "bad": 0,
        "exhausted": 0,
    } | extra


def _matrix() -> dict[str, Any]:
    runs = []
    for clients in (8, 32):
        runs.append(_run("bare", "none", 2, clients, 3000.0))
        runs.append(_run("pgbench", "postgres", 0, clients, 2000.0))
        runs.append(_run("charge", "sqlite", 2, clients, 500.0))
        # C = 1 / (1/3000 + 1/2000) = 1200/s; 960/s is exactly 0.8 x C.
        runs.append(_run("charge", "postgres", 2, clients, 960.0))
    runs.append(_run("charge", "postgres", 4, 32, 900.0))
    runs.append(_run("charge", "postgres", 2, 32, 1000.0, instances=2))
    return {
        "machine": "machine: test",
        "date": "2026-12-03T00:00:00+00:00",
        "duration_s": 5,
        "rounds": 1,
        "merchants": 8,
        "runs": runs,
    }


def _write_results(folder: Path) -> None:
    figures = {
        "matrix": _matrix(),
        "codes": {
            "rounds": 3,
            "versions": {
                "v1": {
                    "verify_us": 3.0,
                    "prim_us": 2.0,
                    "verify_vs_prim": 1.5,
                    "verify_vs_floor": 1.1,
                    "gen_us": 3.0,
                    "gen_vs_prim": 1.5,
                },
                "v3": {
                    "verify_us": 300.0,
                    "prim_us": 100.0,
                    "verify_vs_prim": 3.0,
                    "verify_vs_floor": 1.2,
                    "gen_us": 90.0,
                    "gen_vs_prim": 1.0,
                },
            },
        },
        "devices": {
            "sizes": [1000, 1000000],
            "rounds": 9,
            "versions": {
                "v1": {
                    "1000": {"verify_us": 500, "vs_smallest": 1.0},
                    "1000000": {"verify_us": 650, "vs_smallest": 1.3},
                }
            },
        },
        "claims": {
            "duration_s": 540,
            "rate_per_s": 100.0,
            "worker_interval_s": 5,
            "retention_s_max": 450,
            "bound_rows": 46000.0,
            "peak_rows": 45000,
            "reached_plateau": True,
            "within_bound_after_retention": True,
            "samples": [
                {"t_s": 0, "claims": 0, "charges": 0},
                {"t_s": 500, "claims": 45000, "charges": 50000},
            ],
        },
    }
    for name, data in figures.items():
        (folder / f"{name}.json").write_text(json.dumps(data))


def test_report_states_ratios_and_verdicts(tmp_path: Path) -> None:
    _write_results(tmp_path)
    out = tmp_path / "docs" / "benchmarks.md"
    status = {"matrix": {"exit_code": 0, "elapsed_s": 300}, "scanner": {"exit_code": 2}}
    report.write(tmp_path, out, status, quick=False)
    text = out.read_text()

    assert "| 2 | 32 | 2000 | 3000 | 1200 | 960 | 0.80 | 20.0 | **meets** |" in text
    assert "Why the bar is missed" not in text  # only said when a bar is missed
    assert "5.0 min of benchmarks" in text  # the steps' own seconds, also for --report-only
    assert "| postgres | 2 | 32 | 960 | 0.32 |" in text  # x bare = 960 / 3000
    assert "| v1 | 3.0 | 2.0 | 1.50 |" in text and "| **meets** |" in text
    assert "v3 miss the 2x bar" in text
    assert "| v1 | 500 µs (1.00x) | 650 µs (1.30x) | **misses** |" in text
    assert "| 2 instances | 1000 |" in text and "| 1 instance | 900 |" in text
    assert "stays within the bound: **meets**" in text
    # A benchmark that failed is named, not dropped; one never run says so.
    assert "| 5. POS scanner per 720p frame | `scanner` | 2 |" in text
    assert "Not measured: `scanner` did not produce results" in text
    assert "| 1. Code generation and verification | `codes` | not run |" in text
    for number in range(1, 7):
        if number == 5:
            continue
        png = next((out.parent / "bench").glob(f"fig{number}_*.png"))
        assert png.read_bytes().startswith(PNG_MAGIC)


def test_a_missed_charge_bar_is_explained_with_the_runs_numbers(tmp_path: Path) -> None:
    _write_results(tmp_path)
    matrix_path = tmp_path / "matrix.json"
    matrix = json.loads(matrix_path.read_text())
    for run in matrix["runs"]:
        if run["kind"] == "charge" and run["clients"] == 32 and run["workers"] == 2:
            run["rate_per_s"] = 600.0
    matrix_path.write_text(json.dumps(matrix))
    out = tmp_path / "benchmarks.md"
    report.write(tmp_path, out, {}, quick=False)
    text = out.read_text()
    assert "| 2 | 32 | 2000 | 3000 | 1200 | 600 | 0.50 | 20.0 | **misses** |" in text
    # 1/C = 1/3000 + 1/2000 s = 0.83 ms; 600/s is 1.67 ms
    assert "per operation, while the best charge rate, 600/s, is 1.67 ms" in text
    assert "is 0.83 ms of the whole machine" in text


def _open_run(label: str, share: float | None, p99_ms: float, rate: float, **extra: Any) -> OpenRun:
    result = {
        "scheduled_rate_per_s": rate,
        "achieved_rate_per_s": rate,
        "p50_ms": p99_ms / 4,
        "p90_ms": p99_ms / 2,
        "p99_ms": p99_ms,
        "max_ms": p99_ms * 2,
        "ok": 1000,
        "bad": 0,
        "errors": 0,
        "unsent": 0,
        "unfinished": 0,
        "exhausted": 0,
        "cpu_per_request_ms": 0.15 if share is None else 0.2,
        "first_bad": "",
    } | extra
    return OpenRun(2, label, share, result)


def _charges(open_50: OpenRun) -> dict[str, Any]:
    """C = 1 / (1/3000 + 1/2000) = 1200/s; 1000/s is 0.83 x C; 1 merchant 850/s is 0.85 x 8."""
    runs = [open_50, _open_run("70%", 0.7, 40.0, 700.0), _open_run("sequential", None, 5.0, 300)]
    row = {"workers": 2, "bare": 3000.0, "pgbench": 2000.0, "ceiling": 1200.0, "p99_ms": 90.0}
    return {
        "clients": 32,
        "rounds": 3,
        "duration_s": 5,
        "open_duration_s": 8,
        "sequential_duration_s": 5,
        "settings": charge_targets.server_settings({}, [2], None),
        "rows": [
            row | {"merchants": 8, "charge": 1000.0, "ratio": 1000 / 1200},
            row | {"merchants": 1, "charge": 850.0, "ratio": 850 / 1200},
        ],
        "open_loop": [asdict(r) | {"valid": r.valid} for r in runs],
        "verdicts": [charge_targets.verdicts_for(2, 1000 / 1200, 1200.0, 1000.0, 0.85, runs)],
        "books_ok": True,
    }


def test_charge_targets_section_states_each_target(tmp_path: Path) -> None:
    (tmp_path / "charges.json").write_text(json.dumps(_charges(_open_run("50%", 0.5, 20, 500))))
    out = tmp_path / "benchmarks.md"
    report.write(tmp_path, out, {"charges": {"exit_code": 0, "elapsed_s": 120}}, quick=False)
    text = out.read_text()
    assert (
        "| 2 | 3000 | 2000 | 1200 | 1000 | 0.83 | 850 | 0.85 | 20.0 (500/s) | 40.0 (700/s) "
        "| 5.0 (300/s) | 0.20 / 0.20 / 0.15 | yes |"
    ) in text
    assert "- charges/s >= 0.8 x C (8 merchants): **meets** (1000/s = 0.83 x C" in text
    assert "- one merchant >= 0.9 x eight merchants: **misses** (1 merchant = 0.85" in text
    assert "- open-loop p99 <= 25 ms at 50% of the maximum: **meets** (p99 20.0 ms" in text
    assert (
        f"gthread workers (2) x {THREADS_DEFAULT} threads, keep-alive 5 s, charges committed in "
        "groups of up to 64"
    ) in text
    assert "more than 1280 charges/s, a throughput bar in disguise" in text
    assert "What bounds the throughput bar" not in text  # met: nothing to explain


def test_a_missed_throughput_bar_states_the_cpu_budget_per_charge(tmp_path: Path) -> None:
    data = _charges(_open_run("50%", 0.5, 20, 250))
    data["rows"][0] |= {"charge": 500.0, "ratio": 500 / 1200}
    data["verdicts"] = [
        charge_targets.verdicts_for(
            2,
            500 / 1200,
            1200.0,
            500.0,
            1.0,
            [],
        )
    ]
    (tmp_path / "charges.json").write_text(json.dumps(data))
    out = tmp_path / "benchmarks.md"
    report.write(tmp_path, out, {}, quick=False)
    text = out.read_text()
    cores = report_targets.CORES
    assert f"0.8 x C allows {1000 * cores / 960:.2f} ms of the {cores} cores per charge" in text
    assert f"while a charge took {1000 * cores / 500:.2f} ms" in text


def test_an_unclean_open_loop_run_misses_the_latency_target(tmp_path: Path) -> None:
    """A fast p99 does not count when answers went missing: timed-out requests have no
    latency, so they would flatter the percentile."""
    unclean = _open_run("50%", 0.5, 10, 500, errors=3)
    (tmp_path / "charges.json").write_text(json.dumps(_charges(unclean)))
    out = tmp_path / "benchmarks.md"
    report.write(tmp_path, out, {}, quick=False)
    text = out.read_text()
    assert "| 10.0 (500/s) ! |" in text
    assert "at 50% of the maximum: **misses** (p99 10.0 ms" in text
