"""1. Bank invariant (Jepsen-style): money is neither made nor lost under concurrent load.

`paycode-server serve --workers 4` on its own PostgreSQL database; 8 users (full: 20), each
with a wallet enrolled in v1, v2 and v3, and 3 merchants with a terminal each. 10 client
threads for 5 s (full: 50 for 60 s) do seeded random operations (tests/reliability/
money_load.py): charges of fresh real wallet codes through the real TerminalClient, each
under its own Idempotency-Key, partial and full refunds of earlier payments, and operator
top-ups in-process. Meanwhile a reader checks every invariant on consistent snapshots
(REPEATABLE READ), and against what the clients had been told before each snapshot began.
At the end, quiescent: the calls that errored ("in doubt") are checked against the database
and resolved with their own keys, the books must match the database exactly, the API must
tell each payment as stored, and `paycode-server reconcile` must exit 0. Last, the checker
proves it can fail: three deliberate corruptions of the settled database must each be named.

The seed (figures.seed; replay with PAYCODE_RELIABILITY_SEED) fixes each client thread's
sequence of operations; the interleaving of the threads cannot be replayed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.reliability.figures import Figures, Scale
from tests.reliability.money_load import (
    Reader,
    checker_self_test,
    derived_rng,
    open_money_load,
    run_clients,
    settle_and_reconcile,
)
from tests.support.servers import postgres_database, start_server
from tests.support.shop import use_fast_keystore

pytestmark = pytest.mark.postgres

WORKERS = 4
MERCHANTS = 3
JOIN_TIMEOUT_S = 120.0
"""A client's last call ends within its retries' timeouts (4 x 10 s, plus back-off)."""


def test_money_is_conserved_under_concurrent_clients(
    figures: Figures, seed: int, scale: Scale, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures.section = "1. Bank invariant"
    figures.seed = seed
    print(f"bank invariant seed {seed}")
    use_fast_keystore(monkeypatch)
    users = scale.pick(short=8, full=20)
    threads = scale.pick(short=10, full=50)
    duration_s = scale.pick(short=5.0, full=60.0)
    with (
        postgres_database(migrated=True) as url,
        start_server("postgres", database_url=url, workers=WORKERS) as server,
    ):
        bank = open_money_load(server, tmp_path, derived_rng(seed, "bank"), users, MERCHANTS)
        stop = threading.Event()
        reader = Reader(bank)
        started = time.monotonic()
        clients = run_clients(bank, seed, threads, stop)
        stop.wait(duration_s)
        stop.set()
        for client in clients:
            client.join(timeout=JOIN_TIMEOUT_S)
            if client.is_alive():
                bank.book.anomaly(f"{client.name} still in a call {JOIN_TIMEOUT_S:g} s after stop")
        loaded_s = time.monotonic() - started
        checks = reader.stop()
        final = settle_and_reconcile(
            bank, derived_rng(seed, "final"), scale.pick(short=40, full=300)
        )
        missed = checker_self_test(bank)
        bank.engine.dispose()
    book = bank.book
    figures.runs = checks + 2  # the reader's snapshots, and the two final ones
    figures.operations = len(book.ops)
    figures.details.update(
        {
            "users, merchants, client threads": f"{users}, {MERCHANTS}, {threads}",
            "load seconds": round(loaded_s, 1),
            "operations per second": round(len(book.ops) / loaded_s, 1),
            "snapshot checks during the load": checks,
            "snapshot read errors": sum(reader.errors.values()),
            **book.counts(),
            **final,
        }
    )
    figures.details["checker self-test: corruptions missed"] = len(missed)
    for note in [*book.notes, *(f"the checker missed a corruption: {m}" for m in missed)]:
        figures.anomaly(note)
    assert figures.anomalies == 0, figures.anomaly_notes
    assert checks >= 2, "the reader never checked a snapshot while the load ran"
