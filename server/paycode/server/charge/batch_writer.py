"""Charges on PostgreSQL committed in groups (issue 22, levers 6 and 3): one writer thread per
worker process, on one persistent psycopg connection of its own (not the SQLAlchemy pool: no
checkout and checkin per charge).

Request threads hand it the `paycode_charge` call's parameters (paycode.server.charge.postgres)
and wait, bounded, for their ChargeResult. The writer takes the first queued call, blocking,
then whatever else is queued without waiting, up to `batch_max`: one charge alone is never
delayed, and under load the calls that queued during a commit share the next one. A batch is
ONE transaction, sent as one pipeline (no round trip per statement):

    BEGIN; lock the batch's accounts in id order; N x SELECT ... FROM paycode_charge(...); COMMIT

and its futures are resolved only after the COMMIT returned: no reply before its commit. A
batch of one is the plain autocommit call. The function's body is unchanged, and the calls of
a batch run one after another in it, so each ends exactly as it would alone at that moment (a
twin of an earlier call in the same batch reads that call's stored reply, its code replayed).

Lock order. Two processes' batches would otherwise lock merchant and user accounts in
different orders. The prologue locks, in one statement and in id order, every account of the
batch's users (all their currencies) and the batch's merchants' accounts in its currencies, so
the function's own lock of (payer, payee) finds them held. After the prologue a batch takes
only: device rows (the learned drift), whose users' accounts it already holds; and unique index
entries of what it inserts (nonce, idempotency key, claim, a merchant's succeeded order id),
whose other rows are random ids. An insert or a device update waits only for a transaction that
wrote the same key or device: a duplicate request (the same terminal's nonce or key, the same
code, the same order) or the same customer's device. Every such pair shares an account the
prologue locks (the terminal's merchant, the device's user), so a second batch holding one waits
in its prologue, holding only accounts taken in id order: batches never wait on each other in a
cycle. A cycle can still close between duplicates when one side is not a batch (a refused
charge's single call, which counts guesses in failure_counters, or a refund or confirmation):
PostgreSQL's deadlock detector aborts one, and an aborted batch falls back as below.

Refused plans (`p_rejection`, burns included) never join a batch: they count failures in
failure_counters, another lock order, and stay the single autocommit call of the request thread.

Failures. A batch that fails (a RAISE in the function, a deadlock, a serialization failure, any
psycopg error) is rolled back and its calls run again one by one, each its own transaction, each
future answered with its own result or error: one bad charge never fails its batch. A connection
that died (its COMMIT's fate unknown) answers each of the batch's calls DATABASE_BUSY, whose
retry with the same Idempotency-Key reads the stored reply (docs/api.md, `database_busy`), and
the next batch reconnects. A full queue and a wait past `wait_s` answer DATABASE_BUSY at once.
The thread never dies of a batch: an unexpected error answers that batch DATABASE_BUSY and is
logged with its type only (parameters hold codes and keys); a dead thread is restarted by the
next submit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Engine

from paycode.server.charge.batch_settings import BatchSettings
from paycode.server.charge.postgres import CALL_SQL
from paycode.server.charge.result import ChargeResult
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError

LOCK_SQL = (
    "SELECT a.id FROM accounts a WHERE (a.owner_kind = 'user' AND a.owner_id = ANY(%(users)s))"
    " OR (a.owner_kind = 'merchant' AND a.owner_id = ANY(%(merchants)s)"
    " AND a.currency = ANY(%(currencies)s)) ORDER BY a.id FOR UPDATE"
)
"""The prologue: every account the batch can touch, in id order (the module's docstring)."""
POLL_S = 1.0
"""How often an idle writer looks whether it was closed."""
CONNECT_TIMEOUT_S = 5
CLOSE_WAIT_S = 5.0
BUSY_DETAIL = "the database is unavailable; retry shortly"

_log = logging.getLogger("paycode.charge")


@dataclass(slots=True)
class WriterStats:
    """What the writer did, for tests and the benchmark (read without a lock: a snapshot)."""

    batches: int = 0
    """Transactions of two calls or more that committed."""
    batched_calls: int = 0
    largest_batch: int = 0
    singles: int = 0
    """Calls that ran alone: a batch of one, or one call of a failed batch."""
    fallbacks: int = 0
    """Batches that failed and were run again call by call."""
    connection_losses: int = 0
    refused_full: int = 0
    timed_out: int = 0


@dataclass(slots=True)
class _Call:
    parameters: Mapping[str, Any]
    future: Future[ChargeResult] = field(default_factory=Future)


def database_busy() -> ApiError:
    return ApiError(ErrorCode.DATABASE_BUSY, BUSY_DETAIL)


class BatchWriter:
    """One process's writer. `submit` from any thread; `close` once, at the end."""

    def __init__(self, conninfo: str, settings: BatchSettings) -> None:
        self._conninfo = conninfo  # holds a password when the URL does: never logged
        self._settings = settings
        self._queue: queue.Queue[_Call | None] = queue.Queue(maxsize=settings.queue_max)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._connection: psycopg.Connection[Any] | None = None
        self.stats = WriterStats()

    def submit(self, parameters: Mapping[str, Any]) -> ChargeResult:
        """The call's result once committed; ApiError(DATABASE_BUSY) when the queue is full,
        the wait runs out, or the connection was lost; the call's own psycopg error else."""
        call = _Call(parameters)
        self._ensure_thread()
        try:
            self._queue.put_nowait(call)
        except queue.Full:
            with self._lock:
                self.stats.refused_full += 1
            raise database_busy() from None
        try:
            return call.future.result(timeout=self._settings.wait_s)
        except TimeoutError:
            call.future.cancel()  # still queued: the writer skips it; running: it finishes
            with self._lock:
                self.stats.timed_out += 1
            raise database_busy() from None

    def queued(self) -> int:
        """Calls waiting for the writer now."""
        return self._queue.qsize()

    def backend_pid(self) -> int | None:
        """The writer connection's server process (tests and the benchmark read it)."""
        connection = self._connection
        return None if connection is None or connection.closed else connection.info.backend_pid

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(queue.Full):  # wakes an idle writer (a full one is busy)
            self._queue.put_nowait(None)
        thread = self._thread
        if thread is not None:
            thread.join(timeout=CLOSE_WAIT_S)
        self._drop_connection()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(
                target=self._run, name="paycode-charge-writer", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            batch = self._next_batch()
            try:
                self._write(batch)
            except Exception as error:  # the writer outlives any one batch
                _log.error(
                    "charge writer: unexpected %s; its batch answered database_busy",
                    type(error).__name__,
                )
                _answer_busy(batch)

    def _next_batch(self) -> list[_Call]:
        """The first queued call (waiting at most POLL_S), then what else is queued."""
        try:
            first = self._queue.get(timeout=POLL_S)
        except queue.Empty:
            return []
        batch = [] if first is None else [first]
        while len(batch) < self._settings.batch_max:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is not None:  # None: close() waking the thread
                batch.append(more)
        return batch

    def _write(self, batch: list[_Call]) -> None:
        calls = [call for call in batch if call.future.set_running_or_notify_cancel()]
        if not calls:
            return
        connection = self._connected()
        if connection is None:
            _answer_busy(calls)
            return
        if len(calls) == 1:
            self._run_alone(connection, calls[0])
            return
        try:
            rows = commit_batch(connection, [call.parameters for call in calls])
        except psycopg.Error:
            if connection.broken or connection.closed:
                self._lost(calls)
                return
            self.stats.fallbacks += 1
            for call in calls:
                self._run_alone(connection, call)
            return
        self.stats.batches += 1
        self.stats.batched_calls += len(calls)
        self.stats.largest_batch = max(self.stats.largest_batch, len(calls))
        for call, row in zip(calls, rows, strict=True):
            call.future.set_result(as_result(row))

    def _run_alone(self, connection: psycopg.Connection[Any], call: _Call) -> None:
        """One call in autocommit, as paycode.server.charge.postgres.call_with runs it."""
        self.stats.singles += 1
        if connection.broken or connection.closed:
            _answer_busy([call])
            return
        try:
            row = connection.execute(CALL_SQL, call.parameters).fetchone()
        except psycopg.OperationalError:  # a lost connection, a deadlock, a cancel: retryable
            if connection.broken or connection.closed:
                self._lost([call])
            else:
                _answer_busy([call])
            return
        except psycopg.Error as error:  # the function's RAISE: this call's own error
            call.future.set_exception(error)
            return
        call.future.set_result(as_result(row))

    def _connected(self) -> psycopg.Connection[Any] | None:
        connection = self._connection
        if connection is not None and not (connection.closed or connection.broken):
            return connection
        self._drop_connection()
        try:
            self._connection = psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            )
        except psycopg.Error as error:
            _log.warning("charge writer: cannot connect (%s)", type(error).__name__)
            return None
        return self._connection

    def _lost(self, calls: Sequence[_Call]) -> None:
        self.stats.connection_losses += 1
        _log.warning(
            "charge writer: connection lost; %d charges answered database_busy", len(calls)
        )
        _answer_busy(calls)
        self._drop_connection()

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(psycopg.Error):  # a dead one has nothing left to release
                connection.close()


def commit_batch(
    connection: psycopg.Connection[Any], calls: Sequence[Mapping[str, Any]]
) -> list[tuple[Any, ...] | None]:
    """The calls as one transaction in one pipeline; their rows, only once COMMIT returned.
    Any error is raised after psycopg rolled the transaction back."""
    accounts = {
        "users": sorted({call["p_user_id"] for call in calls}),
        "merchants": sorted({call["p_merchant_id"] for call in calls}),
        "currencies": sorted({call["p_currency"] for call in calls}),
    }
    with connection.pipeline(), connection.transaction():
        connection.execute(LOCK_SQL, accounts)
        cursor = connection.cursor()
        cursor.executemany(CALL_SQL, calls, returning=True)
    rows = [cursor.fetchone()]
    while cursor.nextset():
        rows.append(cursor.fetchone())
    return rows


def as_result(row: tuple[Any, ...] | None) -> ChargeResult:
    assert row is not None, "the function returns one row"
    outcome, status, body, request_hash = row
    return ChargeResult(outcome, status or 0, body or "", request_hash or "")


def _answer_busy(calls: Sequence[_Call]) -> None:
    for call in calls:
        if not call.future.done():
            call.future.set_exception(database_busy())


def batchable(parameters: Mapping[str, Any]) -> bool:
    """A verified code's charge; refusals and burns stay single calls (the docstring)."""
    return parameters["p_rejection"] is None and parameters["p_user_id"] is not None


def writer_slot(engine: Engine, settings: BatchSettings) -> WriterSlot | None:
    """The slot of an app on `engine`; None on SQLite or with batching off."""
    if engine.dialect.name != "postgresql" or not settings.enabled:
        return None
    return WriterSlot(conninfo_of(engine), settings)


def conninfo_of(engine: Engine) -> str:
    """libpq's URL of the engine's database (the SQLAlchemy URL without its driver name)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class WriterSlot:
    """The process's writer, made on first use: after gunicorn's fork, never inherited."""

    def __init__(self, conninfo: str, settings: BatchSettings) -> None:
        self._conninfo = conninfo
        self._settings = settings
        self._lock = threading.Lock()
        self._writer: BatchWriter | None = None
        self._pid = 0

    def writer(self) -> BatchWriter:
        with self._lock:
            if self._writer is None or self._pid != os.getpid():
                self._writer = BatchWriter(self._conninfo, self._settings)
                self._pid = os.getpid()
            return self._writer

    def close(self) -> None:
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None and self._pid == os.getpid():
            writer.close()
