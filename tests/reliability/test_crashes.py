"""3. Crashes: kill -9 under load, then every acknowledged answer must still be the truth.

The load of the bank-invariant test, smaller (tests/reliability/money_load.py): seeded random
charges, refunds and top-ups through the real TerminalClient, which retries a call with the
same Idempotency-Key; a call that still gets no answer mostly waits for the server to come
back and is sent again with that key (what a till does with a sale it could not finish),
else stays in doubt until the load is over; a charge that went through such trouble is,
half the time, re-scanned as a new sale (same code, new key), which must be refused. A
reader checks the invariants on snapshots all the while. Faults, at seeded random moments:

    PostgreSQL, `serve --workers 4`: SIGKILL one random gunicorn worker (the arbiter starts
        another), and SIGKILL the whole server (arbiter and workers, its process group),
        then start it again on the same database. Short: 1 of each; full: 10 of each.
    SQLite, `run` (one process): SIGKILL it, then start it again on the same file.
        Short: 1; full: 10.

Afterwards, quiescent: no acknowledged payment or refund is lost, no payment is duplicated
(one key, one order, one code: at most one payment), every charge's answer is what the
server holds (GET /v1/payments/<id>, or by merchant_order_id for those that met errors),
balances match the books exactly, and `paycode-server reconcile` exits 0. The seed fixes
each client's operations and the fault schedule, not the interleaving.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from bench.load import worker_pids
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.shared.errors import ServerRejected
from tests.reliability.figures import Figures, Scale
from tests.reliability.money_load import (
    MoneyLoad,
    Reader,
    derived_rng,
    kill_server,
    kill_worker,
    open_money_load,
    run_clients,
    settle_and_reconcile,
)
from tests.support.servers import LiveServer, postgres_database, start_server
from tests.support.shop import use_fast_keystore

WORKERS = 4
MERCHANTS = 3
RESCAN_SHARE = 0.5
PATIENCE = 0.7
"""Most calls that error wait out the crash and are sent again; the rest stay in doubt until
the load is over, then are checked against the database and sent again (money_load.py)."""
JOIN_TIMEOUT_S = 120.0
RESPAWN_WAIT_S = 30.0


def _load_with_faults(
    bank: MoneyLoad,
    figures: Figures,
    seed: int,
    *,
    threads: int,
    schedule: list[str],
    gap_s: tuple[float, float],
    tail_s: float,
    mode: str,
    gets_max: int,
) -> dict[str, object]:
    """Run the clients and a reader, inject `schedule`'s faults one after another at random
    gaps, let the load run `tail_s` more, then settle and reconcile. Returns details."""
    server = bank.server
    rng = derived_rng(seed, "faults")
    bank.faults, bank.patience = True, PATIENCE
    stop = threading.Event()
    reader = Reader(bank)
    started = time.monotonic()
    clients = run_clients(bank, seed, threads, stop, rescan_share=RESCAN_SHARE)
    restarts_s: list[float] = []
    killed: dict[str, int] = {"worker": 0, "server": 0}
    for kind in schedule:
        time.sleep(rng.uniform(*gap_s))
        if kind == "worker":
            if kill_worker(server, rng) is None:
                bank.book.anomaly("no gunicorn worker to kill")
                continue
        else:
            bank.up.clear()
            kill_server(server)
            began = time.monotonic()
            try:
                server.start(mode=mode, workers=WORKERS)
            except RuntimeError:
                figures.anomaly(f"the server did not start again after kill -9 #{len(restarts_s)}")
                stop.set()
                bank.up.set()
                raise
            restarts_s.append(time.monotonic() - began)
            bank.up.set()
        killed[kind] += 1
        figures.faults += 1
    stop.wait(tail_s)
    stop.set()
    for client in clients:
        client.join(timeout=JOIN_TIMEOUT_S)
        if client.is_alive():
            bank.book.anomaly(f"{client.name} still in a call {JOIN_TIMEOUT_S:g} s after stop")
    loaded_s = time.monotonic() - started
    checks = reader.stop()
    if mode == "serve":
        _workers_respawned(bank, server)
    final = settle_and_reconcile(bank, derived_rng(seed, "final"), gets_max)
    figures.runs = checks + 2
    figures.operations = len(bank.book.ops)
    return {
        "workers killed": killed["worker"],
        "whole-server kills and restarts": killed["server"],
        "restart seconds (max)": round(max(restarts_s, default=0.0), 1),
        "load seconds": round(loaded_s, 1),
        "snapshot checks during the load": checks,
        "snapshot read errors": sum(reader.errors.values()),
        **bank.book.counts(),
        **final,
    }


def _workers_respawned(bank: MoneyLoad, server: LiveServer) -> None:
    """The arbiter replaced every killed worker (bounded wait)."""
    deadline = time.monotonic() + RESPAWN_WAIT_S
    while len(worker_pids(server)) != WORKERS and time.monotonic() < deadline:
        time.sleep(0.1)
    if len(worker_pids(server)) != WORKERS:
        bank.book.anomaly(f"{len(worker_pids(server))} workers, not {WORKERS}, after the kills")


def _record(figures: Figures, bank: MoneyLoad, details: dict[str, object]) -> None:
    figures.details.update(details)
    for note in bank.book.notes:
        figures.anomaly(note)


@pytest.mark.postgres
def test_postgres_survives_killed_workers_and_a_killed_server(
    figures: Figures, seed: int, scale: Scale, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures.section = "3. Crashes"
    figures.seed = seed
    print(f"crashes (postgres) seed {seed}")
    use_fast_keystore(monkeypatch)
    kills = scale.pick(short=1, full=10)
    schedule = ["worker"] * kills + ["server"] * kills
    derived_rng(seed, "schedule").shuffle(schedule)
    users, threads = scale.pick(short=6, full=10), scale.pick(short=6, full=12)
    with (
        postgres_database(migrated=True) as url,
        start_server("postgres", database_url=url, workers=WORKERS) as server,
    ):
        bank = open_money_load(server, tmp_path, derived_rng(seed, "bank"), users, MERCHANTS)
        details = _load_with_faults(
            bank,
            figures,
            seed,
            threads=threads,
            schedule=schedule,
            gap_s=scale.pick(short=(0.5, 1.0), full=(1.0, 4.0)),
            tail_s=scale.pick(short=0.5, full=3.0),
            mode="serve",
            gets_max=scale.pick(short=30, full=300),
        )
        bank.engine.dispose()
    _record(
        figures, bank, {"users, merchants, threads": f"{users}, {MERCHANTS}, {threads}", **details}
    )
    assert figures.anomalies == 0, figures.anomaly_notes
    assert figures.faults == 2 * kills


def test_sqlite_survives_a_killed_server(
    figures: Figures, seed: int, scale: Scale, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures.section = "3. Crashes"
    figures.seed = seed
    print(f"crashes (sqlite) seed {seed}")
    use_fast_keystore(monkeypatch)
    kills = scale.pick(short=1, full=10)
    users, threads = scale.pick(short=4, full=8), scale.pick(short=4, full=8)
    with start_server("sqlite") as server:
        bank = open_money_load(server, tmp_path, derived_rng(seed, "bank"), users, MERCHANTS)
        details = _load_with_faults(
            bank,
            figures,
            seed,
            threads=threads,
            schedule=["server"] * kills,
            gap_s=scale.pick(short=(0.5, 1.0), full=(1.0, 4.0)),
            tail_s=scale.pick(short=0.5, full=3.0),
            mode="run",
            gets_max=scale.pick(short=30, full=300),
        )
        bank.engine.dispose()
    _record(
        figures, bank, {"users, merchants, threads": f"{users}, {MERCHANTS}, {threads}", **details}
    )
    assert figures.anomalies == 0, figures.anomaly_notes
    assert figures.faults == kills


def test_regression_a_refusal_cut_by_a_killed_worker_is_no_answer(figures: Figures) -> None:
    """A worker killed while it sent a 422 left the status line and headers on the wire but
    not the body: read() returned the part silently, and the terminal client reported a
    refusal "http_422" without retrying (the crash test saw `charge refused http_422`). A
    body shorter than its Content-Length is now no answer: the client retries with the same
    key and hears the stored refusal whole. Played by a socket server, so the cut is exact."""
    figures.section = "3. Crashes"
    problem = b'{"code": "insufficient_funds", "detail": "no", "status": 422}'
    head = b"HTTP/1.1 422 Unprocessable Entity\r\nContent-Type: application/problem+json\r\n"
    answers = [problem[:0], problem[:17], problem]  # cut empty, cut inside, then whole
    keys: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            for body in answers:
                connection, _ = listener.accept()
                with connection:
                    request = connection.recv(65536).decode("latin-1")
                    keys.extend(
                        line.split(":", 1)[1].strip()
                        for line in request.split("\r\n")
                        if line.lower().startswith("idempotency-key:")
                    )
                    length = f"Content-Length: {len(problem)}\r\n\r\n".encode()
                    connection.sendall(head + length + body)

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        port = listener.getsockname()[1]
        till = TerminalClient(
            f"http://127.0.0.1:{port}", "term_x", b"k" * 32, sleep=lambda _s: None
        )
        with pytest.raises(ServerRejected) as refused:
            till.charge(code="123", amount="1.00", currency="CNY", idempotency_key="sale-1")
        server.join(timeout=10)
    figures.runs, figures.operations, figures.faults = 1, len(keys), 2
    if refused.value.code != "insufficient_funds":
        figures.anomaly(f"a cut refusal was read as {refused.value.code}")
    if keys != ["sale-1"] * len(answers):
        figures.anomaly(f"the retries sent keys {keys}")
    assert figures.anomalies == 0, figures.anomaly_notes
