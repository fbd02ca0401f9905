"""The batching charge writer against the single autocommit call, in this process (no HTTP):
charges/s and PostgreSQL backend CPU per charge, with `--threads` threads submitting
pre-planned charges of a fresh bank on a fresh database (issue 22, levers 6 and 3).

    .venv/bin/python -m bench.bench_batch --threads 16 --charges 3000 --rounds 2

Rounds alternate single / batched. Backend CPU is read from /proc/PID/stat of every server
process connected to the bench's database (the commit's WAL flush is the backend's own), so
other databases on the same server do not count; this process's own CPU (planning excluded:
the charges are planned before the clock starts) is the request threads' and the writer's.
Transactions per charge: 1 for the single call; the writer's groups and single calls per
charge when batched. Every charge must succeed and the ledger must sum to zero.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from sqlalchemy import Engine, text

from bench.load import CURRENCY, Fixture, populate
from paycode.server.charge import planning, postgres, transaction
from paycode.server.charge.batch_settings import BatchSettings
from paycode.server.charge.batch_writer import BatchWriter, conninfo_of
from paycode.server.charge.planning import ChargeAttempt, ChargePlan
from paycode.server.config import ServerConfig
from paycode.server.database.directory import Directory
from paycode.server.safety import guard, keyring
from paycode.server.safety.guard import GuardSettings
from paycode.server.safety.secretbox import SecretBox
from paycode.server.testing import LiveServer, Server, postgres_database, start_server
from paycode.shared.timestep import step_at
from paycode.shared.versions.base import VerifierKeys
from paycode.shared.versions.registry import by_name

GUARD = GuardSettings()
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Bench:
    engine: Engine
    fixture: Fixture
    directory: Directory
    keys: VerifierKeys
    database: str


@dataclass(frozen=True)
class Round:
    mode: str
    charges: int
    wall_s: float
    backend_cpu_s: float
    python_cpu_s: float
    transactions: int

    def line(self) -> str:
        return (
            f"{self.mode:8} {self.charges / self.wall_s:8.0f} charges/s  "
            f"{self.backend_cpu_s / self.charges * 1e6:6.0f} us backend CPU/charge  "
            f"{self.python_cpu_s / self.charges * 1e6:6.0f} us Python CPU/charge  "
            f"{self.transactions / self.charges:5.2f} transactions/charge"
        )


def plans(bench: Bench, count: int, serial: list[int]) -> list[ChargePlan]:
    """`count` charges of v2 codes, round-robin over customers and merchants."""
    codec, fixture, made = by_name("v2"), bench.fixture, []
    for index in range(count):
        now_s = time.time()
        customer, key = index % len(fixture.credentials), fixture.terminals[index % 8]
        terminal = bench.directory.terminal(key.key_id)
        assert terminal is not None
        step = step_at(now_s)
        code = codec.generate(
            fixture.credentials[customer], step=step, counter=fixture.next_counter(customer, step)
        )
        serial[0] += 1
        attempt = ChargeAttempt(
            terminal=terminal,
            nonce=f"bb-{fixture.run_tag}-{serial[0]}",
            nonce_expires_at_s=now_s + 600,
            idempotency_key=f"bb-{fixture.run_tag}-{serial[0]}",
            request_hash=hashlib.sha256(b"%d" % serial[0]).hexdigest(),
            now_s=now_s,
            guard_scopes=guard.scopes_for(GUARD, terminal.terminal_id, key.merchant_id, None),
        )
        body = {"code": code, "amount": "1.00", "currency": CURRENCY}
        made.append(planning.plan_charge(attempt, body, bench.directory, bench.keys))
    return made


def backend_cpu_s(bench: Bench) -> dict[int, float]:
    """pid -> user + system CPU seconds of every server process on the bench's database."""
    with bench.engine.connect() as connection:
        pids = connection.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = :db"), {"db": bench.database}
        ).scalars()
        found = {}
        for pid in pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            found[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


def run_round(
    bench: Bench,
    mode: str,
    charge: Callable[[ChargePlan], str],
    made: list[ChargePlan],
    threads: int,
    transactions: Callable[[], int],
) -> Round:
    lanes = [made[lane::threads] for lane in range(threads)]
    cpu_before, transactions_before = backend_cpu_s(bench), transactions()
    python_before_s, started_s = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        outcomes = list(pool.map(lambda lane: [charge(p) for p in lane], lanes))
    wall_s = time.perf_counter() - started_s
    python_s = time.process_time() - python_before_s
    cpu_after = backend_cpu_s(bench)
    used_s = sum(cpu_after[pid] - cpu_before.get(pid, 0.0) for pid in cpu_after)
    refused = [out for lane in outcomes for out in lane if out != "succeeded"]
    assert not refused, refused[:5]
    count = transactions() - transactions_before
    return Round(mode, len(made), wall_s, used_s, python_s, count)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--charges", type=int, default=3000, help="per round")
    parser.add_argument("--rounds", type=int, default=2, help="of each mode")
    parser.add_argument("--customers", type=int, default=64)
    args = parser.parse_args(argv)
    with (
        postgres_database() as url,
        start_server("postgres", where="in_process", database_url=url) as server,
    ):
        bench = set_up(server, args.customers)
        writer = BatchWriter(conninfo_of(bench.engine), BatchSettings())
        single_calls = [0]

        def single(made: ChargePlan) -> str:
            single_calls[0] += 1  # the GIL makes += on one list item good enough for a count
            return transaction.execute(bench.engine, made, GUARD).outcome

        modes: dict[str, tuple[Callable[[ChargePlan], str], Callable[[], int]]] = {
            "single": (single, lambda: single_calls[0]),
            "batched": (
                lambda p: writer.submit(postgres.call_parameters(p, GUARD)).outcome,
                lambda: writer.stats.batches + writer.stats.singles,
            ),
        }
        serial = [0]
        for mode, (charge, count) in modes.items():  # warm-up: connections, prepared plans
            warm = plans(bench, 4 * args.threads, serial)
            run_round(bench, mode, charge, warm, args.threads, count)
        for _ in range(args.rounds):
            for mode, (charge, count) in modes.items():
                made = plans(bench, args.charges, serial)
                print(run_round(bench, mode, charge, made, args.threads, count).line(), flush=True)
        print(f"writer: {writer.stats}")
        writer.close()
        with bench.engine.connect() as connection:
            total = connection.execute(
                text("SELECT sum(amount_minor) FROM ledger_entries")
            ).scalar()
        assert total == 0, total
        print("ledger sums to zero")
    return 0


def set_up(server: Server, customers: int) -> Bench:
    fixture = populate(cast(LiveServer, server), customers, 8)
    box = SecretBox.from_config(ServerConfig.from_env(server.env))
    keys, _ = keyring.load_keys(server.engine, box)
    database = server.engine.url.database or ""
    return Bench(server.engine, fixture, Directory(server.engine, box), keys, database)


if __name__ == "__main__":
    raise SystemExit(main())
