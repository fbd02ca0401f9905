"""Where charges' time goes under load (bench/bench_charges.py's profile, part 2): CPU per
charge of the gunicorn workers and of PostgreSQL, WAL per charge, what the database sessions
wait on (pg_stat_activity samples) and, when installed, py-spy on the workers."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from sqlalchemy import make_url

from bench.charge_profile import PHASES, _package
from bench.load import (
    CLIENTS,
    SUBPROCESS_SLACK_S,
    payment_counts,
    run_wrk,
    settle,
    worker_pids,
    wrk_run,
)
from paycode.server.testing import (
    POSTGRES_ADMIN_URL,
)

if TYPE_CHECKING:  # bench_charges imports this module
    from bench.bench_charges import Bench

LOAD_PROFILE_S = 6
SAMPLE_INTERVAL_S = 0.02
PY_SPY_RATE_HZ = 100
PY_SPY_TOP_FUNCTIONS = 12


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
