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
where Python time goes (cProfile in-process; py-spy on the gunicorn workers when installed),
and what the database sessions wait on under load (pg_stat_activity samples).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import json
import os
import pstats
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from sqlalchemy import Engine, event, make_url

from bench import REPO_ROOT
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
    CHARGE_PATH,
    CLIENTS,
    PGBENCH_SCALE,
    SUBPROCESS_SLACK_S,
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
    worker_pids,
    wrk_run,
)
from paycode.server.config import ServerConfig
from paycode.server.testing import (
    POSTGRES_ADMIN_URL,
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
PROFILE_CHARGES = 200
PROFILE_WARMUP_CHARGES = 20
LOAD_PROFILE_S = 6
SAMPLE_INTERVAL_S = 0.02
PY_SPY_RATE_HZ = 100
PY_SPY_TOP_FUNCTIONS = 12
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


# -- profile: one charge in-process --------------------------------------------------------------


@dataclass
class DbClock:
    """Time spent waiting on PostgreSQL in this process, by kind: the first keyword of each
    statement (the first statement of a transaction also carries psycopg's BEGIN), plus the
    pool's pre-ping and COMMIT."""

    seconds: dict[str, float] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    enabled: bool = True

    def add(self, kind: str, elapsed_s: float) -> None:
        if self.enabled:
            self.seconds[kind] = self.seconds.get(kind, 0.0) + elapsed_s
            self.counts[kind] += 1


def instrument(engine: Engine) -> DbClock:
    clock = DbClock()
    started: list[float] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _before(*_args: Any) -> None:
        started.append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _after(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        clock.add(_keyword(statement), time.perf_counter() - started.pop())

    dialect = engine.dialect

    def timed(name: str, kind: str) -> None:
        original: Callable[..., Any] = getattr(dialect, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                clock.add(kind, time.perf_counter() - start)

        setattr(dialect, name, wrapper)

    timed("do_ping", "ping (pool_pre_ping)")
    timed("do_commit", "COMMIT")
    return clock


class WireTrace:
    """libpq's own protocol trace (PQtrace) on every new connection of an engine: the exact
    round trips (ReadyForQuery) and statements a charge costs, BEGIN/COMMIT and pings included."""

    def __init__(self, engine: Engine, path: Path) -> None:
        self.path = path
        self._file = path.open("w")
        self._connections: list[Any] = []
        self.enabled = False

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            if self.enabled:
                dbapi_connection.pgconn.trace(self._file.fileno())
                flags = psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE
                dbapi_connection.pgconn.set_trace_flags(flags)
                self._connections.append(dbapi_connection)

    def close(self) -> tuple[int, Counter[str]]:
        for connection in self._connections:
            with contextlib.suppress(Exception):
                connection.pgconn.untrace()
        self._file.close()
        return parse_trace(self.path.read_text())


QUOTED = re.compile(r'"((?:[^"]|"")*)"')
MESSAGE = re.compile(r"^([FB])\t\d+\t(\w+)", re.MULTILINE)


def parse_trace(text: str) -> tuple[int, Counter[str]]:
    """(round trips, statements by first keyword) from a libpq trace. A message starts a line
    with F (frontend) or B (backend), its length and its type; SQL text may span lines."""
    round_trips, statements = 0, Counter[str]()
    prepared: dict[str, str] = {}
    bound = ""
    matches = list(MESSAGE.finditer(text))
    for index, match in enumerate(matches):
        direction, message = match.group(1), match.group(2)
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        quoted = QUOTED.findall(text[match.end() : end])
        if direction == "B" and message == "ReadyForQuery":
            round_trips += 1
        elif direction == "F" and message == "Query" and quoted:
            statements[_keyword(quoted[0])] += 1
        elif direction == "F" and message == "Parse" and len(quoted) >= 2:
            prepared[quoted[0]] = quoted[1]
        elif direction == "F" and message == "Bind" and len(quoted) >= 2:
            bound = quoted[1]
        elif direction == "F" and message == "Execute":
            statements[_keyword(prepared.get(bound, "?"))] += 1
    return round_trips, statements


def _keyword(sql_text: str) -> str:
    words = sql_text.strip().split(None, 1)
    if not words or words[0] == ";":
        return "; (pool ping)"
    return words[0].upper()


PACKAGES = (
    ("sqlalchemy", "/sqlalchemy/"),
    ("psycopg (incl. waiting for PostgreSQL)", "psycopg"),
    ("flask + werkzeug", "/flask/"),
    ("flask + werkzeug", "/werkzeug/"),
    ("cryptography", "cryptography"),
    ("server/ (app code)", f"{REPO_ROOT}/server/"),
    ("shared/ (protocol)", f"{REPO_ROOT}/shared/"),
    ("json", "/json/"),
)
PHASES = (
    ("authenticate_terminal: terminal, HMAC, nonce", "authenticate_terminal"),
    ("run_once: idempotency record + charge", "run_once"),
    ("charge: verify, claim, move money", "charge"),
    ("_verify: device lookup + crypto", "_verify"),
    ("_claim: claim insert", "_claim"),
    ("_move_money: accounts, ledger, payment", "_move_money"),
    ("SessionTransaction.commit: flush + COMMIT/RELEASE", "commit"),
)
TPC_B_ROUND_TRIPS = 7
"""pgbench's TPC-B transaction: BEGIN, 3 UPDATEs, SELECT, INSERT, END, simple protocol."""


def _package(filename: str, function: str) -> str:
    text = f"{filename} {function}"
    for name, needle in PACKAGES:
        if needle in text:
            return name
    return "other (stdlib, builtins)"


def profile_in_process(server: LiveServer, fixture: Fixture, workdir: Path) -> None:
    """Sequential charges through the real app (Flask test client, same database): no queueing,
    no HTTP, no lock waits: what one charge costs by itself."""
    from paycode.server.app import create_app  # noqa: PLC0415

    app = create_app(ServerConfig.from_env(server.env))
    engine: Engine = app.extensions["paycode_engine"]
    client = app.test_client()
    lines = list(fixture.request_lines(PROFILE_WARMUP_CHARGES + 3 * PROFILE_CHARGES, 1))
    batches = iter(
        [
            lines[:PROFILE_WARMUP_CHARGES],
            *[
                lines[PROFILE_WARMUP_CHARGES + i * PROFILE_CHARGES :][:PROFILE_CHARGES]
                for i in range(3)
            ],
        ]
    )

    def post_all(batch: list[str]) -> float:
        start = time.perf_counter()
        for line in batch:
            key_id, timestamp, nonce, signature, idempotency_key, body = line.split("\t")
            response = client.post(
                CHARGE_PATH,
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "Paycode-Key-Id": key_id,
                    "Paycode-Timestamp": timestamp,
                    "Paycode-Nonce": nonce,
                    "Paycode-Signature": signature,
                    "Idempotency-Key": idempotency_key,
                },
            )
            assert response.status_code == 201, response.get_data(as_text=True)[:300]
        return time.perf_counter() - start

    post_all(next(batches))  # imports, key cache, prepared statements
    # 1. exact round trips and statements, from libpq's trace, on fresh connections
    engine.dispose()
    trace = WireTrace(engine, workdir / "libpq.trace")
    trace.enabled = True
    post_all(next(batches))
    trace.enabled = False
    engine.dispose()
    round_trips, statements = trace.close()
    # 2. wall time vs time waiting on the database (no tracing, no profiler)
    clock = instrument(engine)
    wall_s = post_all(next(batches))
    clock.enabled = False
    # 3. where the Python time goes (cProfile: inflates Python time, so shares only)
    profiler = cProfile.Profile()
    profiler.enable()
    post_all(next(batches))
    profiler.disable()
    engine.dispose()
    n = PROFILE_CHARGES
    print(f"\nper-charge profile, in-process (Flask test client, {n} sequential charges):")
    print(
        f"  round trips to PostgreSQL: {round_trips / n:.1f} per charge (a pgbench TPC-B "
        f"transaction: {TPC_B_ROUND_TRIPS}); statements per charge: "
        + ", ".join(f"{k} {v / n:.1f}" for k, v in statements.most_common())
    )
    db_ms, wall_ms = 1000 * sum(clock.seconds.values()) / n, 1000 * wall_s / n
    print(
        f"  time: {wall_ms:.2f} ms per charge = {wall_ms - db_ms:.2f} ms Python + {db_ms:.2f} ms "
        "waiting on PostgreSQL, of which (ms per charge, calls per charge):"
    )
    for kind, seconds in sorted(clock.seconds.items(), key=lambda item: -item[1]):
        print(f"    {kind:<24} {1000 * seconds / n:6.2f} ms  {clock.counts[kind] / n:5.1f}")
    print(f"  so one worker alone does at most {1000 / wall_ms:.0f} charges/s")
    print_cprofile(pstats.Stats(profiler), n)


def print_cprofile(stats: pstats.Stats, n: int) -> None:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    by_package: Counter[str] = Counter()
    total = 0.0
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        by_package[_package(filename, function)] += tottime
        total += tottime
    print("  cProfile, own time by package (shares of a profiled charge):")
    for name, seconds in by_package.most_common():
        print(f"    {name:<40} {100 * seconds / total:5.1f} %")
    print("  cProfile, cumulative time per charge phase (ms per charge, profiled):")
    for label, function in PHASES:
        cumulative = [
            ct
            for (filename, _line, fn), (_cc, _nc, _tt, ct, _callers) in raw.items()
            if fn == function
            and (f"{REPO_ROOT}/server/" in filename or "sqlalchemy/orm/session" in filename)
        ]
        if cumulative:
            print(f"    {label:<52} {1000 * max(cumulative) / n:6.2f}")


# -- profile: under load ------------------------------------------------------------------------


def classify(state: str | None, wait_type: str | None, wait_event: str | None) -> str:
    if state == "idle":
        return "idle: no transaction open (worker in Python/HTTP, or no request)"
    if state == "idle in transaction":
        return "in transaction, waiting for the worker (Python between statements)"
    if state == "active" and wait_type is None:
        return "running a statement (PostgreSQL CPU)"
    if wait_type == "Lock":
        return f"waiting for a row lock (Lock:{wait_event})"
    if wait_type in ("IO", "LWLock") and wait_event and "WAL" in wait_event:
        return f"commit: WAL write/flush ({wait_type}:{wait_event})"
    if wait_type == "Client":
        return f"sending results to the worker (Client:{wait_event})"
    return f"{state} {wait_type}:{wait_event}"


@contextlib.contextmanager
def sample_sessions(database: str) -> Iterator[Counter[str]]:
    """Sample pg_stat_activity of the app's database every SAMPLE_INTERVAL_S (bounded by the
    caller's block)."""
    samples: Counter[str] = Counter()
    stop = threading.Event()

    def loop() -> None:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            while not stop.wait(SAMPLE_INTERVAL_S):
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                    " WHERE datname = %s AND backend_type = 'client backend'"
                    " AND pid <> pg_backend_pid()",
                    (database,),
                ).fetchall()
                for state, wait_type, wait_event in rows:
                    samples[classify(state, wait_type, wait_event)] += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=10)


def wal_counters() -> tuple[int, int]:
    with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3) as conn:
        row = conn.execute("SELECT wal_records, wal_sync FROM pg_stat_wal").fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


def py_spy_binary() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S
    return 0.0


def postgres_pids() -> list[int]:
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError, ValueError):
            if comm.read_text().strip() == "postgres":
                pids.append(int(comm.parent.name))
    return pids


@dataclass
class CpuSnapshot:
    """CPU seconds used so far: by the gunicorn workers, by PostgreSQL (all its processes),
    by this process's finished children (wrk), and by the whole machine (busy, steal)."""

    workers_s: float
    postgres_s: float
    children_s: float
    busy_s: float
    steal_s: float

    @classmethod
    def take(cls, workers: list[int], postgres: list[int]) -> CpuSnapshot:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle, iowait, steal = ticks[3], ticks[4], ticks[7] if len(ticks) > 7 else 0
        busy = sum(ticks[:8]) - idle - iowait - steal
        return cls(
            workers_s=sum(process_cpu_s(pid) for pid in workers),
            postgres_s=sum(process_cpu_s(pid) for pid in postgres),
            children_s=usage.ru_utime + usage.ru_stime,
            busy_s=busy / CLOCK_TICKS_PER_S,
            steal_s=steal / CLOCK_TICKS_PER_S,
        )


def print_cpu(
    before: CpuSnapshot, after: CpuSnapshot, charges: int, wall_s: float, target_per_s: float
) -> None:
    def ms(attr: str) -> float:
        spent_s = float(getattr(after, attr)) - float(getattr(before, attr))
        return 1000 * spent_s / max(1, charges)

    other = ms("busy_s") - ms("workers_s") - ms("postgres_s") - ms("children_s")
    cores = os.cpu_count() or 1
    busy_share = (after.busy_s - before.busy_s) / (wall_s * cores)
    print(
        f"  CPU per charge: gunicorn workers {ms('workers_s'):.2f} ms, PostgreSQL "
        f"{ms('postgres_s'):.2f} ms, wrk {ms('children_s'):.2f} ms, rest {other:.2f} ms "
        f"(samplers, py-spy, other tenants); machine {100 * busy_share:.0f} % busy, "
        f"steal {1000 * (after.steal_s - before.steal_s) / max(1, charges):.2f} ms/charge"
    )
    total_ms = ms("busy_s")
    print(
        f"  -> {cores} cores / {total_ms:.1f} ms of CPU per charge = "
        f"{1000 * cores / max(total_ms, 1e-9):.0f} charges/s at most on this machine"
        + (
            f"; 0.8 x C = {target_per_s:.0f}/s allows {1000 * cores / target_per_s:.1f} ms"
            if target_per_s
            else ""
        )
    )


def profile_under_load(bench: Bench, workers: int, merchants: int) -> None:
    """Two extra charge runs (not counted above): a clean one that only reads CPU and WAL
    counters, then one with the database sessions sampled and (when installed) py-spy on the
    gunicorn workers; samplers cost CPU, so the first run's rate is the one to compare."""
    server = bench.charge_server
    path = bench.workdir / "profile.tsv"
    # a short warm-up first: every worker has its database connection before pids are taken
    bench.fixture.write_requests(path, bench.charge_requests(1), merchants)
    run_wrk(server.url, path, 201, "once", 1)
    settle(server)
    print(
        f"\nunder load: workers={workers}, merchants={merchants}, {CLIENTS} clients, "
        f"{LOAD_PROFILE_S} s runs (not in the table)"
    )
    accounted_run(bench, path, workers, merchants)
    sampled_run(bench, path, workers, merchants)


def accounted_run(bench: Bench, path: Path, workers: int, merchants: int) -> None:
    server = bench.charge_server
    bench.fixture.write_requests(path, bench.charge_requests(LOAD_PROFILE_S), merchants)
    wal_before, before = wal_counters(), payment_counts(server)
    server.engine.dispose()  # the bench's own connection stays out of PostgreSQL's CPU
    pids = worker_pids(server), postgres_pids()
    cpu_before, started = CpuSnapshot.take(*pids), time.monotonic()
    result = run_wrk(server.url, path, 201, "once", LOAD_PROFILE_S)
    cpu_after, wall_s = CpuSnapshot.take(*pids), time.monotonic() - started
    after, wal_after = settle(server), wal_counters()
    run = wrk_run("charge", result, workers, merchants, 0)
    bench.check_books(run, before, after)
    charges = max(1, after["succeeded"] - before["succeeded"])
    print(
        f"  clean run: {run.rate_per_s:.0f} charges/s, p50 {run.p50_ms:.1f} ms, p99 "
        f"{run.p99_ms:.1f} ms, non-201={run.bad}" + "".join(f"; ! {note}" for note in run.notes)
    )
    print_cpu(cpu_before, cpu_after, run.ok, wall_s, bench.target_per_s.get(workers, 0.0))
    print(
        f"  WAL: {(wal_after[0] - wal_before[0]) / charges:.1f} records and "
        f"{(wal_after[1] - wal_before[1]) / charges:.2f} WAL flushes (fsync) per charge"
    )


def sampled_run(bench: Bench, path: Path, workers: int, merchants: int) -> None:
    server = bench.charge_server
    database = make_url(server.database_url).database or ""
    bench.fixture.write_requests(path, bench.charge_requests(LOAD_PROFILE_S), merchants)
    spy = py_spy_binary()
    spies: list[tuple[subprocess.Popen[bytes], Path]] = []
    before = payment_counts(server)
    server.engine.dispose()  # only the workers' sessions remain in the database to sample
    try:
        for pid in worker_pids(server) if spy else []:
            out = bench.workdir / f"py-spy-{pid}.txt"
            command = [
                str(spy), "record", "--pid", str(pid), "--rate", str(PY_SPY_RATE_HZ),
                "--duration", str(LOAD_PROFILE_S), "--format", "raw", "--output", str(out),
                "--nonblocking", "--full-filenames",
            ]  # fmt: skip
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            spies.append((process, out))
        with sample_sessions(database) as samples:
            result = run_wrk(server.url, path, 201, "once", LOAD_PROFILE_S)
        for process, _out in spies:  # they stop by themselves after LOAD_PROFILE_S
            process.wait(timeout=LOAD_PROFILE_S + SUBPROCESS_SLACK_S)
    finally:
        for process, _out in spies:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    run = wrk_run("charge", result, workers, merchants, 0)
    bench.check_books(run, before, settle(server))
    total = sum(samples.values())
    print(
        f"  sampled run ({run.rate_per_s:.0f} charges/s, non-201={run.bad}"
        + "".join(f"; ! {note}" for note in run.notes)
        + f"): the workers' PostgreSQL sessions, {total} samples of pg_stat_activity:"
    )
    for label, count in samples.most_common():
        print(f"    {100 * count / max(1, total):5.1f} %  {label}")
    if not spy:
        print("  (py-spy not installed: `.venv/bin/pip install py-spy` adds a worker profile)")
        return
    print_py_spy([out for _process, out in spies])


def print_py_spy(files: list[Path]) -> None:
    leaf: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    total = 0
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            total += count
            file_of_leaf = frames[-1].rsplit("(", 1)[-1]
            leaf[_package(file_of_leaf, frames[-1])] += count
            functions[_short_frame(frames[-1])] += count
            for label, function in PHASES:
                if any(frame.startswith(f"{function} (") for frame in frames):
                    phases[label] += count
    if not total:
        print("  py-spy: no samples (ptrace not permitted?)")
        return
    print(f"  py-spy on the gunicorn workers ({total} samples, only when not idle):")
    for name, count in leaf.most_common():
        print(f"    {100 * count / total:5.1f} %  {name} (own time)")
    for label, _function in PHASES:
        if phases[label]:
            print(f"    {100 * phases[label] / total:5.1f} %  in {label} (inclusive)")
    print("  hottest functions (own time):")
    for name, count in functions.most_common(PY_SPY_TOP_FUNCTIONS):
        print(f"    {100 * count / total:5.1f} %  {name}")


def _short_frame(frame: str) -> str:
    """'send (/x/site-packages/psycopg/conn.py:12)' -> 'send (psycopg/conn.py)'."""
    function, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    tail = "/".join(Path(path).parts[-2:]) if path else "?"
    return f"{function} ({tail})"


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
        if args.threads is not None:
            for server in (charge_server, bare):
                server.env["PAYCODE_SERVE_THREADS"] = str(args.threads)
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
