"""Where one charge's time goes, in this process (bench/bench_charges.py's profile, part 1):
round trips and statements (libpq trace), Python vs database time, and cProfile's hottest
functions of a few hundred charges through the real app."""

from __future__ import annotations

import contextlib
import cProfile
import pstats
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, event

from bench import REPO_ROOT
from bench.load import (
    CHARGE_PATH,
    Fixture,
)
from paycode.server.charge import postgres
from paycode.server.config import ServerConfig
from paycode.server.testing import (
    LiveServer,
)

PROFILE_CHARGES = 200
PROFILE_WARMUP_CHARGES = 20


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
    _time_charge_calls(clock)
    return clock


def _time_charge_calls(clock: DbClock) -> None:
    """The charge's own call runs on a raw DBAPI cursor, which SQLAlchemy's events never see."""
    original = postgres.call_with

    def timed_call(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            clock.add("paycode_charge call", time.perf_counter() - start)

    # transaction.execute looks the function up on the module at every call
    postgres.call_with = timed_call  # type: ignore[assignment]


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
    no HTTP, no lock waits: what one charge costs by itself. Batching is off: charges one at a
    time would only form groups of one, and the call then runs in this thread, where the wire
    trace, the clock and cProfile see it (the writer's thread and connection they would not)."""
    from paycode.server.app import create_app  # noqa: PLC0415

    app = create_app(ServerConfig.from_env(server.env | {"PAYCODE_CHARGE_BATCH": "1"}))
    engine: Engine = app.extensions["paycode_engine"]
    client = app.test_client()
    # Warm every customer's device into the directory's cache, as a running server has it:
    # a cold device costs a lookup (BEGIN, SELECT, ROLLBACK) no steady-state charge pays.
    warmup = max(PROFILE_WARMUP_CHARGES, len(fixture.credentials))
    lines = list(fixture.request_lines(warmup + 3 * PROFILE_CHARGES, 1))
    batches = iter(
        [
            lines[:warmup],
            *[lines[warmup + i * PROFILE_CHARGES :][:PROFILE_CHARGES] for i in range(3)],
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
