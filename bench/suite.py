"""`make bench` / `make bench-quick`: every benchmark, one after the other, then the report.

    python -m bench.suite [--quick] [--out docs/benchmarks.md] [--only matrix,claims]

Each benchmark runs as its own process (a clean interpreter, its own servers and databases) and
writes its figures as JSON into build/bench/; bench/report.py turns them into
docs/benchmarks.md and docs/bench/*.png. A benchmark that fails is reported as failed, with
its exit code, and the others still run: the report never silently drops a figure. Nothing
runs in parallel: each figure is measured on a machine that does nothing else of ours.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import REPO_ROOT, report

RESULTS_DIR = REPO_ROOT / "build" / "bench"
STEP_TIMEOUT_S = 30 * 60
CHARGES_FULL_ARGS = (
    *("--workers", "2", "--rounds", "3", "--duration-s", "5"),
    *("--open-duration-s", "8", "--sequential-duration-s", "5", "--no-profile"),
)
"""The shipped two workers only, short runs: `make bench` takes about 21 minutes (most of it
the claims run)."""


@dataclass(frozen=True)
class Step:
    name: str
    module: str
    quick_args: tuple[str, ...]
    full_args: tuple[str, ...]


STEPS = (
    Step("codes", "bench.bench_codes", ("--rounds", "3"), ("--rounds", "7")),
    Step("devices", "bench.bench_devices", ("--quick",), ()),
    Step(
        "charges",
        "bench.bench_charges",
        ("--quick", "--no-profile"),
        CHARGES_FULL_ARGS,
    ),
    Step("matrix", "bench.bench_matrix", ("--quick",), ()),
    Step("scanner", "bench.bench_scanner", ("--quick",), ()),
    Step("claims", "bench.bench_claims", ("--quick",), ()),
    Step("webwallet", "bench.bench_webwallet", ("--quick",), ()),
)


def run_step(step: Step, quick: bool, results: Path) -> dict[str, object]:
    out = results / f"{step.name}.json"
    out.unlink(missing_ok=True)
    args = [*(step.quick_args if quick else step.full_args), "--json", str(out)]
    if step.name == "scanner" and quick:
        args += ["--out", str(results / "scanner.md")]  # quick numbers stay out of docs/
    log = results / f"{step.name}.log"
    print(f"== {step.name}: python -m {step.module} {' '.join(args)}", flush=True)
    started = time.monotonic()
    with log.open("w") as output:
        try:
            done = subprocess.run(
                [sys.executable, "-m", step.module, *args],
                cwd=REPO_ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=STEP_TIMEOUT_S,
                check=False,
            )
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = -1
    elapsed_s = time.monotonic() - started
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    print(f"   exit {code} after {elapsed_s:.0f} s: {' | '.join(tail)[:300]}", flush=True)
    return {
        "exit_code": code,
        "elapsed_s": round(elapsed_s),
        "log": str(log.relative_to(REPO_ROOT)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every figure, small: < 3 min")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--only", default=None, help="comma-separated steps; the rest are reused")
    parser.add_argument("--report-only", action="store_true", help="render the last results")
    args = parser.parse_args(argv)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    chosen = set(args.only.split(",")) if args.only else {step.name for step in STEPS}
    unknown = chosen - {step.name for step in STEPS}
    if unknown:
        parser.error(f"unknown steps: {', '.join(sorted(unknown))}")
    status_path = RESULTS_DIR / "status.json"
    status = json.loads(status_path.read_text()) if status_path.exists() else {}
    started = time.monotonic()
    for step in STEPS:
        if step.name in chosen and not args.report_only:
            status[step.name] = run_step(step, args.quick, RESULTS_DIR) | {"quick": args.quick}
    status_path.write_text(json.dumps(status, indent=1))
    total_s = time.monotonic() - started
    report.write(RESULTS_DIR, args.out, status, quick=args.quick)
    print(f"report: {args.out} (+ {report.figure_dir(args.out)}/); total {total_s:.0f} s")
    return 0 if all(entry["exit_code"] == 0 for entry in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
