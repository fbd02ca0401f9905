"""Charges over HTTP across workers, clients and databases, against their ceilings; and two
server instances on one PostgreSQL (figures 3 and 4 of `make bench`, and the scale-out run).

    python -m bench.bench_matrix [--quick] [--json OUT]

For every gunicorn worker count (1, 2, 4) and number of concurrent clients (8, 32, 128), in
interleaved rounds so this shared machine's noise hits all alike:

  charge/postgres  real signed POST /v1/charges (v2 codes, one Idempotency-Key each) on
                   `paycode-server serve --workers N` and a fresh PostgreSQL database;
  charge/sqlite    the same on an SQLite file (the embedded default; one writer at a time);
  bare             a Flask endpoint parsing the same body, served the same way (bench/bare_server);
  pgbench          TPC-B on the same PostgreSQL at the same client count (once per round:
                   it has no workers).

Then scale-out: a second `serve` instance on another port sharing the PostgreSQL database
(as a second host would), both loaded at once (half the clients each), against one instance
with the same total of workers. wrk drives all HTTP load (bench/charges.lua). The ledger must
sum to zero after every run. Writes every run to --json for bench/report.py.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import json
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from bench.load import (
    BareServer,
    Fixture,
    Run,
    bare_server,
    ledger_sum,
    machine_line,
    payment_counts,
    pgbench_init,
    populate,
    preflight,
    restart,
    run_pgbench,
    run_wrk,
    settle,
    wrk_run,
)
from paycode.server.testing import LiveServer, postgres_database, start_server

FULL = {"workers": [1, 2, 4], "clients": [8, 32, 128], "rounds": 1, "duration_s": 4.0}
"""One round of 4 s runs keeps `make bench` under 20 minutes with bench_charges beside it (the
charge targets are measured there, in interleaved rounds); within a round the runs compared are
side by side."""
QUICK = {"workers": [2], "clients": [8, 32, 128], "rounds": 1, "duration_s": 2.0}
MERCHANTS = 8
"""Charges spread over eight shops, as a real day's are: one shop's account row is a hot spot
bench_charges measures separately (--merchants 1)."""
CUSTOMERS = 200
RATE_GUESS_PER_S = 2500
REQUESTS_EXTRA = 1000
BARE_REQUESTS = 2000
SCALE_OUT_WORKERS = 2
"""Workers per instance in the scale-out run (two instances: four in all)."""
SCALE_OUT_CLIENTS = 32
PGBENCH_CLIENTS_MAX = 64
"""The shared PostgreSQL allows 100 connections (max_connections), and the charge servers and
the harness hold some: pgbench runs at most 64 clients, a saturated database's rate either way;
the report says so beside the 128-client row."""


@dataclass
class Target:
    """A charge server and the customers it knows."""

    backend: str
    server: LiveServer
    fixture: Fixture
    best_rate_per_s: float = 0.0


@dataclass
class Matrix:
    args: argparse.Namespace
    workdir: Path
    bare: BareServer
    targets: list[Target]
    pgbench_db: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    def record(
        self, run: Run, backend: str, instances: int = 1, pgbench_clients: int | None = None
    ) -> None:
        row = asdict(run) | {"backend": backend, "instances": instances, "valid": run.valid}
        if pgbench_clients is not None:
            row["pgbench_clients"] = pgbench_clients
        self.runs.append(row)
        label = f"{run.kind}/{backend}" if run.kind == "charge" else run.kind
        print(
            f"  w={run.workers} c={run.clients:<3} i={instances} r={run.round} {label:<16}"
            f" {run.rate_per_s:>7.0f}/s p50 {run.p50_ms:>6.1f} p95 {run.p95_ms:>6.1f}"
            f" p99 {run.p99_ms:>6.1f} ms bad={run.bad + run.exhausted}"
            + "".join(f"\n      ! {note}" for note in run.notes),
            flush=True,
        )

    def requests_for(self, target: Target, name: str, count_hint: float) -> Path:
        path = self.workdir / f"{name}.tsv"
        rate = max(RATE_GUESS_PER_S, 1.5 * target.best_rate_per_s)
        count = int(rate * count_hint) + REQUESTS_EXTRA
        target.fixture.write_requests(path, count, MERCHANTS)
        return path

    def charge(self, target: Target, workers: int, clients: int, rnd: int) -> Run:
        duration_s = self.args.duration_s
        path = self.requests_for(target, f"charges-{target.backend}", duration_s)
        before = payment_counts(target.server)
        result = run_wrk(target.server.url, path, 201, "once", duration_s, clients)
        run = wrk_run("charge", result, workers, MERCHANTS, rnd, clients)
        check_books(target.server, run, before, clients)
        target.best_rate_per_s = max(target.best_rate_per_s, run.rate_per_s)
        return run

    def bare_run(self, workers: int, clients: int, rnd: int) -> Run:
        path = self.workdir / "bare.tsv"
        if not path.exists():
            self.targets[0].fixture.write_requests(path, BARE_REQUESTS, MERCHANTS)
        result = run_wrk(self.bare.url, path, 200, "cycle", self.args.duration_s, clients)
        return wrk_run("bare", result, workers, 0, rnd, clients)

    def measure(self, workers: int, rnd: int) -> None:
        for target in self.targets:
            restart(target.server, workers)
        restart(self.bare, workers)
        for target in self.targets:  # first connections, key caches: out of the rounds
            self.charge(target, workers, 8, 0)
        for clients in self.args.clients:
            steps = [("bare", None), *((t.backend, t) for t in self.targets)]
            shift = (rnd + clients) % len(steps)
            for name, target in steps[shift:] + steps[:shift]:
                if target is None:
                    self.record(self.bare_run(workers, clients, rnd), "none")
                else:
                    self.record(self.charge(target, workers, clients, rnd), name)
            if workers == self.args.workers[0]:
                pg_clients = min(clients, PGBENCH_CLIENTS_MAX)
                pg = run_pgbench(
                    self.pgbench_db, self.args.duration_s, self.workdir, rnd, 0, pg_clients
                )
                pg.clients = clients  # the row it is the ceiling for; pgbench_clients says more
                self.record(pg, "postgres", pgbench_clients=pg_clients)


def check_books(server: LiveServer, run: Run, before: Any, clients: int) -> None:
    """Ledger sums to zero; the server made every payment wrk saw, plus at most one in flight
    per client when wrk stopped."""
    after = settle(server)
    total = ledger_sum(server)
    if total != 0:
        run.notes.append(f"LEDGER DOES NOT SUM TO ZERO: {total}")
    made = after["succeeded"] - before["succeeded"]
    if not run.ok <= made <= run.ok + clients:
        run.notes.append(f"server made {made} payments, wrk saw {run.ok} succeed")


# -- scale-out ----------------------------------------------------------------------------------


@contextlib.contextmanager
def second_instance(first: LiveServer, workers: int) -> Iterator[LiveServer]:
    """Another `serve` process on its own port and instance folder, same database and master
    key: what a second host behind the load balancer is."""
    instance = Path(tempfile.mkdtemp(prefix="paycode-bench-second-"))
    env = dict(first.env) | {"PAYCODE_INSTANCE": str(instance)}
    server = LiveServer(first.backend, first.database_url, instance, env)
    try:
        server.start(mode="serve", workers=workers)
        yield server
    finally:
        server.stop()


def scale_out(matrix: Matrix, rnd: int) -> None:
    """Two instances x SCALE_OUT_WORKERS at once vs one instance with the same worker total."""
    target = next(t for t in matrix.targets if t.backend == "postgres")
    total_workers = 2 * SCALE_OUT_WORKERS
    restart(target.server, total_workers)
    matrix.record(matrix.charge(target, total_workers, SCALE_OUT_CLIENTS, rnd), "postgres")
    restart(target.server, SCALE_OUT_WORKERS)
    with second_instance(target.server, SCALE_OUT_WORKERS) as second:
        servers = [target.server, second]
        matrix.charge(target, SCALE_OUT_WORKERS, 8, 0)  # warm the first instance's caches
        half = SCALE_OUT_CLIENTS // 2
        paths = [
            matrix.requests_for(target, f"scale-{index}", matrix.args.duration_s / 2)
            for index in range(2)
        ]
        before = payment_counts(target.server)
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            futures = [
                pool.submit(run_wrk, server.url, path, 201, "once", matrix.args.duration_s, half)
                for server, path in zip(servers, paths, strict=True)
            ]
            results = [future.result() for future in futures]
        runs = [
            wrk_run("charge", result, SCALE_OUT_WORKERS, MERCHANTS, rnd, half) for result in results
        ]
        combined = combine(runs, SCALE_OUT_CLIENTS)
        check_books(target.server, combined, before, SCALE_OUT_CLIENTS)
        matrix.record(combined, "postgres", instances=2)


def combine(runs: list[Run], clients: int) -> Run:
    """Two simultaneous wrk runs as one: rates add; latency percentiles are the worse of the
    two (wrk reports percentiles, not samples, so they cannot be merged exactly)."""
    first = runs[0]
    combined = Run(
        "charge",
        first.workers,
        first.merchants,
        first.round,
        rate_per_s=sum(r.rate_per_s for r in runs),
        p50_ms=max(r.p50_ms for r in runs),
        p99_ms=max(r.p99_ms for r in runs),
        ok=sum(r.ok for r in runs),
        bad=sum(r.bad for r in runs),
        exhausted=sum(r.exhausted for r in runs),
        socket_errors=sum(r.socket_errors for r in runs),
        notes=[note for r in runs for note in r.notes],
        p95_ms=max(r.p95_ms for r in runs),
        clients=clients,
    )
    return combined


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 workers only, 1 round of 2 s")
    parser.add_argument("--json", type=Path, default=None, help="write every run here")
    parser.add_argument("--no-scale-out", action="store_true")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        setattr(args, key, value)
    return args


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = preflight()
    if problem:
        print(f"bench_matrix: cannot run: {problem}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.monotonic()
    machine = machine_line()
    print(machine, flush=True)
    try:
        runs = _run(args)
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, databases dropped", file=sys.stderr)
        return 130
    elapsed_s = time.monotonic() - started
    valid = all(run["valid"] for run in runs)
    print(f"total {elapsed_s:.0f} s; every run valid (ledger zero, no bad answers): {valid}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "quick": args.quick,
                    "duration_s": args.duration_s,
                    "rounds": args.rounds,
                    "merchants": MERCHANTS,
                    "elapsed_s": round(elapsed_s),
                    "runs": runs,
                },
                indent=1,
            )
        )
    return 0


def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    with (
        tempfile.TemporaryDirectory(prefix="paycode-matrix-") as workdir,
        postgres_database() as app_url,
        postgres_database() as pgbench_url,
        start_server("postgres", database_url=app_url, mode="serve", workers=1) as pg,
        start_server("sqlite", mode="serve", workers=1) as lite,
        bare_server() as bare,
    ):
        pgbench_db = make_url(pgbench_url).database or ""
        pgbench_init(pgbench_db)
        targets = [
            Target("postgres", pg, populate(pg, CUSTOMERS, MERCHANTS)),
            Target("sqlite", lite, populate(lite, CUSTOMERS, MERCHANTS)),
        ]
        matrix = Matrix(args, Path(workdir), bare, targets, pgbench_db)
        for rnd in range(1, args.rounds + 1):
            for workers in args.workers if rnd % 2 else reversed(args.workers):
                matrix.measure(workers, rnd)
            if not args.no_scale_out:
                scale_out(matrix, rnd)
        return matrix.runs


if __name__ == "__main__":
    sys.exit(main())
