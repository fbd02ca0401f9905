"""The claims table over a long run: bounded by the purge (figure 6 of `make bench`).

    python -m bench.bench_claims [--quick] [--duration-s 480] [--json OUT]

A real server (`serve --workers 2`, PostgreSQL) takes signed charges without pause (wrk, one
connection, in 10-second slices of freshly signed requests), while the real `paycode-server
worker --interval-s 5` purges. Every few seconds the claims table is counted. A claim is kept
until its code can no longer be accepted (paycode.server.charge.planning: the step, the acceptance
window
and the largest learned drift, about 7 minutes), so the table grows for that long and then
stays flat at about rate x retention: the figure shows the count against that bound. The
quick run is too short to reach the plateau and says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench import REPO_ROOT
from bench.load import Fixture, ledger_sum, machine_line, populate, preflight, run_wrk
from paycode.server.charge.planning import CLAIM_STEPS_KEPT
from paycode.server.testing import LiveServer, postgres_database, start_server
from paycode.shared.timestep import STEP_SECONDS

FULL_DURATION_S = 540
"""Retention (450 s) plus a minute and a half of plateau."""
QUICK_DURATION_S = 40
SLICE_S = 10
CLIENTS = 1
SAMPLE_S = 5.0
WORKER_INTERVAL_S = 5
CUSTOMERS = 200
MERCHANTS = 4
RATE_GUESS_PER_S = 800
RETENTION_S_MAX = (CLAIM_STEPS_KEPT + 2) * STEP_SECONDS
"""The longest a claim lives: from the start of its step to the end of the kept steps."""


@dataclass
class Samples:
    started: float = field(default_factory=time.monotonic)
    rows: list[dict[str, float]] = field(default_factory=list)
    charges: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, claims: int) -> None:
        with self.lock:
            self.rows.append(
                {
                    "t_s": round(time.monotonic() - self.started, 1),
                    "claims": claims,
                    "charges": self.charges,
                }
            )


def count_claims(server: LiveServer) -> int:
    with server.engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM claims")).scalar_one())


def sample_until(server: LiveServer, samples: Samples, stop: threading.Event) -> None:
    while not stop.wait(SAMPLE_S):
        samples.add(count_claims(server))


def start_worker(server: LiveServer, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "paycode.server.cli",
                "worker",
                "--interval-s",
                str(WORKER_INTERVAL_S),
            ],
            env=server.env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def drive(
    server: LiveServer, fixture: Fixture, duration_s: float, workdir: Path, samples: Samples
) -> None:
    """Charges without pause in slices; each slice's requests are signed just before it (codes
    are accepted for about a minute)."""
    deadline = time.monotonic() + duration_s
    rate_per_s = RATE_GUESS_PER_S
    slices_max = int(duration_s // SLICE_S) + 2
    for _ in range(slices_max):
        left_s = deadline - time.monotonic()
        if left_s < 1:
            break
        slice_s = int(min(SLICE_S, left_s))  # wrk takes whole seconds
        path = workdir / "slice.tsv"
        fixture.write_requests(path, int(1.5 * rate_per_s * slice_s) + 200, MERCHANTS)
        result = run_wrk(server.url, path, 201, "once", slice_s, CLIENTS)
        good = int(result["good"])
        rate_per_s = max(100.0, good / slice_s)
        with samples.lock:
            samples.charges += good


def summary(samples: Samples, duration_s: float) -> dict[str, Any]:
    rows = samples.rows
    rate_per_s = samples.charges / duration_s if duration_s else 0.0
    bound = rate_per_s * (RETENTION_S_MAX + WORKER_INTERVAL_S + SAMPLE_S)
    settled = [row for row in rows if row["t_s"] >= RETENTION_S_MAX + WORKER_INTERVAL_S]
    return {
        "rate_per_s": rate_per_s,
        "retention_s_max": RETENTION_S_MAX,
        "bound_rows": bound,
        "peak_rows": max((row["claims"] for row in rows), default=0),
        "reached_plateau": bool(settled),
        "within_bound_after_retention": all(row["claims"] <= bound for row in settled),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DURATION_S} s of load")
    parser.add_argument("--duration-s", type=float, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    duration_s = args.duration_s or (QUICK_DURATION_S if args.quick else FULL_DURATION_S)
    problem = preflight()
    if problem:
        print(f"bench_claims: cannot run: {problem}", file=sys.stderr)
        return 2
    machine = machine_line()
    print(machine, flush=True)
    print(f"claims table under {duration_s:g} s of charges; a claim lives <= {RETENTION_S_MAX} s")
    samples = run(duration_s)
    result = summary(samples, duration_s)
    for row in samples.rows[:: max(1, len(samples.rows) // 12)]:
        t_s, claims, charges = row["t_s"], row["claims"], row["charges"]
        print(f"  t={t_s:>6.0f} s  claims {claims:>8.0f}  charges {charges:>8.0f}")
    print(
        f"rate {result['rate_per_s']:.0f} charges/s; peak {result['peak_rows']:.0f} claims; bound "
        f"rate x retention = {result['bound_rows']:.0f}; plateau reached: "
        f"{result['reached_plateau']}; within bound after retention: "
        f"{result['within_bound_after_retention']}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "duration_s": duration_s,
                    "worker_interval_s": WORKER_INTERVAL_S,
                    "samples": samples.rows,
                    **result,
                },
                indent=1,
            )
        )
    return 0 if result["within_bound_after_retention"] else 1


def run(duration_s: float) -> Samples:
    with (
        tempfile.TemporaryDirectory(prefix="paycode-claims-") as workdir,
        postgres_database() as url,
        start_server("postgres", database_url=url, mode="serve", workers=2) as server,
    ):
        fixture = populate(server, CUSTOMERS, MERCHANTS)
        worker = start_worker(server, Path(workdir) / "worker.log")
        samples = Samples()
        samples.add(count_claims(server))
        stop = threading.Event()
        sampler = threading.Thread(target=sample_until, args=(server, samples, stop), daemon=True)
        sampler.start()
        try:
            drive(server, fixture, duration_s, Path(workdir), samples)
        finally:
            stop.set()
            sampler.join(timeout=SAMPLE_S * 2)
            worker.terminate()
            worker.wait(timeout=30)
        samples.add(count_claims(server))
        assert ledger_sum(server) == 0, "the ledger must sum to zero"
        return samples


if __name__ == "__main__":
    sys.exit(main())
