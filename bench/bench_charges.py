"""Charges per second over HTTP (gunicorn, PostgreSQL) next to two ceilings, and the latency of
charges under open-loop load, in one run.

    python -m bench.bench_charges [--quick] [--workers 2,4] [--merchants 8,1] [--rounds 3]
                                  [--duration-s 10] [--customers 200] [--threads 8]
                                  [--open-duration-s 10] [--sequential-duration-s 5]
                                  [--no-open-loop] [--no-profile] [--json OUT]

docs/bars.md (charges). At 32 concurrent clients (wrk, one connection each) it measures, in
interleaved rounds so that the noise of this shared machine hits all three alike:

  charge   `paycode-server serve --workers N` on a fresh PostgreSQL database: real signed
           POST /v1/charges (v2 codes, HMAC-signed terminal requests, unique Idempotency-Key),
           each pre-built request sent once, with 8 merchants and with 1; the ledger must sum
           to zero after every run;
  bare     a Flask endpoint that parses the same JSON body and answers {"ok": true}, served by
           the same `serve` code path with the same workers and threads (bench/bare_server.py);
  pgbench  TPC-B (`pgbench -i -s 10` on a scratch database, `-c 32 -j 2 -T <duration>`) on the
           same PostgreSQL.

Then, on the same server, open-loop Poisson arrivals at 50% and 70% of this run's closed-loop
maximum (8 merchants) and one client sending one charge at a time (bench/openloop.py, latency
from the scheduled send time; bench/charge_targets.py checks that every acknowledged payment
exists once). Targets: charge >= 0.8 x C with C = 1 / (1/bare + 1/pgbench) at 8 merchants;
1 merchant >= 0.9 x 8 merchants; open-loop p99 <= 25 ms at 50%. The p99 at 32 closed-loop
clients is printed but is no target: by Little's law it is a throughput bar in disguise.
Then a per-charge profile: round trips and statements (libpq trace), Python vs database time,
where Python time goes (cProfile in-process: bench/charge_profile.py; py-spy on the gunicorn
workers when installed), and what the database sessions wait on under load (pg_stat_activity
samples: bench/charge_load_profile.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy import make_url

from bench.charge_load_profile import profile_under_load
from bench.charge_profile import profile_in_process
from bench.charge_targets import (
    TARGET_RATIO,
    OpenRun,
    closed_loop_max,
    one_merchant_ratio,
    open_loop_runs,
    print_verdicts,
    server_settings,
    settings_line,
    verdicts_for,
)
from bench.load import (
    CLIENTS,
    PGBENCH_SCALE,
    WRK_THREADS,
    BareServer,
    Fixture,
    Kind,
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
from paycode.server.testing import (
    LiveServer,
    postgres_database,
    start_server,
)

RATE_GUESS_PER_S = 2500
"""Requests generated per second of run, at least; 1.5 x the best measured charge rate when that
is more. A run that outruns its requests is flagged `exhausted`."""
REQUESTS_MIN = 2000
BARE_REQUESTS = 2000
"""The bare endpoint cycles through this many charge-shaped requests (nothing is single-use)."""
DURATION_S_MAX = 20
"""Codes are made for the current 30 s step and accepted during the next one: a run started
right after generating them must end within 30 s."""
WARMUP_S = 2
DEFAULT_CUSTOMERS = 200


# -- the measurement ----------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    charge_server: LiveServer
    bare: BareServer
    fixture: Fixture
    pgbench_db: str
    workdir: Path
    charge_workers: int
    runs: list[Run] = field(default_factory=list)
    best_charge_rate: float = 0.0
    target_per_s: dict[int, float] = field(default_factory=dict)
    """workers -> 0.8 x the median ceiling C measured with that many workers."""

    def charge_requests(self, duration_s: float) -> int:
        # Never below the guess: a cold warm-up once set the budget under a later round's rate.
        rate = max(RATE_GUESS_PER_S, 1.5 * self.best_charge_rate)
        return max(REQUESTS_MIN, int(rate * duration_s) + 1000)

    def run_charge(self, workers: int, merchants: int, rnd: int, duration_s: float) -> Run:
        path = self.workdir / "charges.tsv"
        self.fixture.write_requests(path, self.charge_requests(duration_s), merchants)
        before = payment_counts(self.charge_server)
        result = run_wrk(self.charge_server.url, path, 201, "once", duration_s)
        after = settle(self.charge_server)
        run = wrk_run("charge", result, workers, merchants, rnd)
        self.check_books(run, before, after)
        self.best_charge_rate = max(self.best_charge_rate, run.rate_per_s)
        return run

    def check_books(self, run: Run, before: Counter[str], after: Counter[str]) -> None:
        """The ledger sums to zero; the server made at least every payment wrk saw succeed and
        at most those plus what was in flight when wrk stopped (one per client)."""
        total = ledger_sum(self.charge_server)
        if total != 0:
            run.notes.append(f"LEDGER DOES NOT SUM TO ZERO: {total}")
        made = after["succeeded"] - before["succeeded"]
        if not run.ok <= made <= run.ok + CLIENTS:
            run.notes.append(f"server made {made} payments, wrk saw {run.ok} succeed")
        failed = after["failed"] - before["failed"]
        if failed:
            run.notes.append(f"{failed} failed payments")

    def run_bare(self, workers: int, rnd: int, duration_s: float) -> Run:
        path = self.workdir / "bare.tsv"
        if not path.exists():
            self.fixture.write_requests(path, BARE_REQUESTS, len(self.fixture.terminals))
        result = run_wrk(self.bare.url, path, 200, "cycle", duration_s)
        return wrk_run("bare", result, workers, 0, rnd)

    def warm_up(self, workers: int) -> None:
        """Start-up costs (imports, first connections, key cache) stay out of the rounds."""
        for run in (self.run_bare(workers, 0, WARMUP_S), self.run_charge(workers, 1, 0, WARMUP_S)):
            if not run.valid:
                print_run(run)

    def measure(self, workers: int) -> None:
        if self.charge_workers != workers:
            restart(self.charge_server, workers)
            self.charge_workers = workers
        restart(self.bare, workers)
        self.warm_up(workers)
        duration_s = self.args.duration_s
        kinds: list[tuple[Kind, int]] = [("bare", 0), ("pgbench", 0)]
        kinds += [("charge", m) for m in self.args.merchants]
        for rnd in range(1, self.args.rounds + 1):
            shift = (rnd - 1) % len(kinds)
            for kind, merchants in kinds[shift:] + kinds[:shift]:
                if kind == "bare":
                    run = self.run_bare(workers, rnd, duration_s)
                elif kind == "pgbench":
                    run = run_pgbench(self.pgbench_db, duration_s, self.workdir, rnd, workers)
                else:
                    run = self.run_charge(workers, merchants, rnd, duration_s)
                self.runs.append(run)
                print_run(run)


def print_run(run: Run) -> None:
    label = run.kind
    if run.kind == "charge":
        label += f" ({run.merchants} merchant{'s' if run.merchants > 1 else ''})"
    unit = "tps" if run.kind == "pgbench" else "/s"
    expected = {"charge": "non-201", "bare": "non-200", "pgbench": "failed"}[run.kind]
    line = (
        f"  w={run.workers} round {run.round}  {label:<24} {run.rate_per_s:>8.0f} {unit:<4}"
        f" p50 {run.p50_ms:>6.1f} ms  p99 {run.p99_ms:>6.1f} ms  n={run.ok:<6}"
        f" {expected}={run.bad}"
    )
    if run.exhausted:
        line += f" EXHAUSTED={run.exhausted}"
    print(line + "".join(f"\n      ! {note}" for note in run.notes), flush=True)


# -- report -------------------------------------------------------------------------------------


@dataclass
class Row:
    workers: int
    merchants: int
    bare: float
    pgbench: float
    ceiling: float
    charge: float
    ratio: float
    p50_ms: float
    p99_ms: float
    bare_p99_ms: float
    pgbench_p99_ms: float
    bad: int
    valid: bool


def summarize(runs: list[Run], workers: int, merchants: int) -> Row | None:
    """Medians over rounds; the ratio is the median of the per-round ratios (same-round
    ceilings), as bench_codes does."""
    rounds = sorted({r.round for r in runs if r.workers == workers})
    ratios, ceilings = [], []
    picked: dict[str, list[Run]] = {"bare": [], "pgbench": [], "charge": []}
    for rnd in rounds:
        in_round = [r for r in runs if r.workers == workers and r.round == rnd]
        bare = [r for r in in_round if r.kind == "bare"]
        pg = [r for r in in_round if r.kind == "pgbench"]
        charge = [r for r in in_round if r.kind == "charge" and r.merchants == merchants]
        if not (bare and pg and charge):
            continue
        ceiling = 1 / (1 / bare[0].rate_per_s + 1 / pg[0].rate_per_s)
        ceilings.append(ceiling)
        ratios.append(charge[0].rate_per_s / ceiling)
        picked["bare"] += bare
        picked["pgbench"] += pg
        picked["charge"] += charge
    if not ratios:
        return None

    def med(kind: str, attr: str) -> float:
        return float(statistics.median(float(getattr(r, attr)) for r in picked[kind]))

    return Row(
        workers,
        merchants,
        bare=med("bare", "rate_per_s"),
        pgbench=med("pgbench", "rate_per_s"),
        ceiling=statistics.median(ceilings),
        charge=med("charge", "rate_per_s"),
        ratio=statistics.median(ratios),
        p50_ms=med("charge", "p50_ms"),
        p99_ms=med("charge", "p99_ms"),
        bare_p99_ms=med("bare", "p99_ms"),
        pgbench_p99_ms=med("pgbench", "p99_ms"),
        bad=sum(r.bad + r.exhausted for r in picked["charge"]),
        valid=all(r.valid for kind in picked.values() for r in kind),
    )


def print_table(rows: list[Row], rounds: int, duration_s: float) -> None:
    print(
        f"\nsummary: medians of {rounds} interleaved round(s) of {duration_s:g} s, "
        f"{CLIENTS} clients; ratio = median of per-round charge / C"
    )
    print(
        f"{'workers':>7} {'merch':>5} | {'bare/s':>7} {'p99':>5} | {'pgb tps':>7} {'p99':>5} |"
        f" {'C/s':>6} | {'charge/s':>8} {'x C':>5} {'p50':>6} {'p99':>6} | {'non-201':>7} | valid"
    )
    for r in rows:
        print(
            f"{r.workers:>7} {r.merchants:>5} | {r.bare:>7.0f} {r.bare_p99_ms:>5.1f} |"
            f" {r.pgbench:>7.0f} {r.pgbench_p99_ms:>5.1f} | {r.ceiling:>6.0f} |"
            f" {r.charge:>8.0f} {r.ratio:>5.2f} {r.p50_ms:>6.1f} {r.p99_ms:>6.1f} |"
            f" {r.bad:>7} | {'yes' if r.valid else 'NO'}"
        )
    print("(latencies in ms; C = 1 / (1/bare + 1/pgbench), from the same round)")
    print(
        f"  (the p99 at {CLIENTS} closed-loop clients is no target: they wait on average "
        f"{CLIENTS} / rate by Little's law, so a 25 ms p99 there would need >= "
        f"{CLIENTS / 0.025:.0f} charges/s; latency is measured open loop)"
    )


# -- main ---------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="workers 2, merchants 8 and 1, 1 round of 3 s"
    )
    parser.add_argument("--workers", type=_int_list, default=None, help="e.g. 2,4")
    parser.add_argument("--merchants", type=_int_list, default=None, help="e.g. 1,8")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--duration-s", type=float, default=None)
    parser.add_argument("--customers", type=int, default=DEFAULT_CUSTOMERS)
    parser.add_argument(
        "--threads", type=int, default=None, help="request threads per worker (serve's default)"
    )
    parser.add_argument(
        "--charge-batch",
        type=int,
        default=None,
        help="PAYCODE_CHARGE_BATCH of the charge server (the shipped default; 1: no batching)",
    )
    parser.add_argument("--open-duration-s", type=float, default=None, help="each open-loop run")
    parser.add_argument("--sequential-duration-s", type=float, default=None)
    parser.add_argument("--no-open-loop", action="store_true", help="closed-loop rounds only")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-charge profile")
    parser.add_argument("--profile-only", action="store_true", help="only the profile")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    quick = args.quick
    args.workers = args.workers or ([2] if quick else [2, 4])
    args.merchants = args.merchants or [8, 1]
    args.rounds = args.rounds or (1 if quick else 3)
    args.duration_s = args.duration_s or (3.0 if quick else 10.0)
    args.open_duration_s = args.open_duration_s or (3.0 if quick else 10.0)
    args.sequential_duration_s = args.sequential_duration_s or (2.0 if quick else 5.0)
    durations = (args.duration_s, args.open_duration_s, args.sequential_duration_s)
    if not all(1 <= d <= DURATION_S_MAX for d in durations):
        parser.error(f"durations must be 1-{DURATION_S_MAX} s (codes expire)")
    if not all(1 <= w <= 16 for w in args.workers) or not all(m >= 1 for m in args.merchants):
        parser.error("--workers 1-16 each, --merchants >= 1 each")
    if not 1 <= args.rounds <= 20 or not 1 <= args.customers <= 10_000:
        parser.error("--rounds 1-20, --customers 1-10000")
    return args


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = preflight()
    if problem:
        print(f"bench_charges: cannot run: {problem}", file=sys.stderr)
        return 2
    # Clean up on `kill` as on Ctrl-C, even when started with SIGINT ignored (`cmd &`).
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    started = time.monotonic()
    args.machine = machine_line()
    print(args.machine)
    print(
        f"setup: {args.customers} customers (one v2 device each), merchants {args.merchants} "
        f"(one terminal each), workers {args.workers}, {CLIENTS} clients (wrk -t "
        f"{WRK_THREADS}), {args.rounds} round(s) x {args.duration_s:g} s, pgbench -s "
        f"{PGBENCH_SCALE} -c {CLIENTS} -j {WRK_THREADS}",
        flush=True,
    )
    try:
        return _run(args, started)
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, databases dropped", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, started: float) -> int:
    with (
        tempfile.TemporaryDirectory(prefix="paycode-bench-") as workdir,
        postgres_database() as app_url,
        postgres_database() as pgbench_url,
        start_server(
            "postgres", database_url=app_url, mode="serve", workers=args.workers[0]
        ) as charge_server,
        bare_server() as bare,
    ):
        assert isinstance(charge_server, LiveServer)  # mode="serve": a process of its own
        if args.threads is not None:
            for server in (charge_server, bare):
                server.env["PAYCODE_SERVE_THREADS"] = str(args.threads)
        if args.charge_batch is not None:
            charge_server.env["PAYCODE_CHARGE_BATCH"] = str(args.charge_batch)
        if args.threads is not None or args.charge_batch is not None:
            restart(charge_server, args.workers[0])
        fixture = populate(charge_server, args.customers, max(args.merchants))
        pgbench_db = make_url(pgbench_url).database or ""
        pgbench_init(pgbench_db)
        bench = Bench(
            args, charge_server, bare, fixture, pgbench_db, Path(workdir), args.workers[0]
        )
        print(f"ready in {time.monotonic() - started:.0f} s; runs:", flush=True)
        open_runs: list[OpenRun] = []
        for workers in args.workers if not args.profile_only else []:
            bench.measure(workers)
            if not args.no_open_loop:
                print(f"open loop (w={workers}, {CLIENTS} connections at most):", flush=True)
                durations_s = (args.open_duration_s, args.sequential_duration_s)
                rate = closed_loop_max(bench.runs, workers)
                open_runs += open_loop_runs(
                    charge_server, fixture, Path(workdir), workers, rate, durations_s
                )
        rows = [
            row
            for workers in args.workers
            for merchants in args.merchants
            if (row := summarize(bench.runs, workers, merchants)) is not None
        ]
        if rows:
            print_table(rows, args.rounds, args.duration_s)
        settings = server_settings(charge_server.env, args.workers, args.threads)
        print(f"server settings: {settings_line(settings)}")
        verdicts = _verdicts(bench.runs, rows, open_runs, args.workers)
        print_verdicts(verdicts)
        bench.target_per_s = {r.workers: TARGET_RATIO * r.ceiling for r in rows}
        if not args.no_profile:
            missed = not all(v["throughput"]["ok"] for v in verdicts)
            print("\nprofile" + (" (targets missed: where the time goes)" if missed else ""))
            _profile(bench, args, Path(workdir))
        books_ok = ledger_sum(charge_server) == 0 and all_books_ok(bench.runs, open_runs)
        print(
            f"\nbooks (ledger sums to zero; every acknowledged payment exists once) after every "
            f"run: {'yes' if books_ok else 'NO'}; total {time.monotonic() - started:.0f} s"
        )
        valid = all(r.valid for r in rows) and all(r.valid for r in open_runs)
        if args.json:
            write_json(args, rows, open_runs, verdicts, settings, books_ok, started)
        if not valid:
            print("INVALID: some runs had unexpected answers or exhausted their requests")
        return 0 if valid else 1


def _verdicts(
    runs: list[Run], rows: list[Row], open_runs: list[OpenRun], workers: list[int]
) -> list[dict[str, Any]]:
    verdicts = []
    for count in workers:
        row = next((r for r in rows if r.workers == count and r.merchants == 8), None)
        verdicts.append(
            verdicts_for(
                count,
                row.ratio if row else None,
                row.ceiling if row else 0.0,
                row.charge if row else 0.0,
                one_merchant_ratio(runs, count),
                [r for r in open_runs if r.workers == count],
            )
        )
    return verdicts


def _profile(bench: Bench, args: argparse.Namespace, workdir: Path) -> None:
    profile_in_process(bench.charge_server, bench.fixture, workdir)
    workers = args.workers[-1]
    if bench.charge_workers != workers:
        restart(bench.charge_server, workers)
        bench.charge_workers = workers
    for merchants in args.merchants if not args.quick else args.merchants[:1]:
        profile_under_load(bench, workers, merchants)


def write_json(
    args: argparse.Namespace,
    rows: list[Row],
    open_runs: list[OpenRun],
    verdicts: list[dict[str, Any]],
    settings: dict[str, Any],
    books_ok: bool,
    started: float,
) -> None:
    """What bench/report.py needs for the charge targets' section of docs/benchmarks.md."""
    data = {
        "machine": args.machine,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "rounds": args.rounds,
        "duration_s": args.duration_s,
        "open_duration_s": args.open_duration_s,
        "sequential_duration_s": args.sequential_duration_s,
        "clients": CLIENTS,
        "settings": settings,
        "rows": [asdict(row) for row in rows],
        "open_loop": [asdict(run) | {"valid": run.valid} for run in open_runs],
        "verdicts": verdicts,
        "books_ok": books_ok,
        "elapsed_s": round(time.monotonic() - started),
    }
    args.json.write_text(json.dumps(data, indent=1))


def all_books_ok(runs: list[Run], open_runs: list[OpenRun]) -> bool:
    closed = not any("LEDGER" in note or "server made" in note for r in runs for note in r.notes)
    return closed and not any(run.notes for run in open_runs)


if __name__ == "__main__":
    sys.exit(main())
