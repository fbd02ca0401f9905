"""Prometheus metrics, served at /metrics (docs/operations.md, "Metrics").

    paycode_charges_total{outcome, code_version}
    paycode_verification_failures_total{reason, code_version}
    paycode_http_request_duration_seconds{method, route, status}     histogram
    paycode_webhook_backlog                                          scrape time, cached
    paycode_claims_rows                                              scrape time, cached

A request costs one histogram observation (a charge: one counter increment more, and one for a
verification failure), held in this process (BUFFER, paycode.server.operations.metric_buffer)
and added to the metrics every second, before this process renders /metrics, and at exit;
nothing touches the database per request. The two gauges are read at
scrape time, at most once per DB_GAUGES_TTL_S in each process, with bounded queries.

Under `paycode-server serve` each gunicorn worker writes its samples to its own files in
PROMETHEUS_MULTIPROC_DIR, and a scrape (whichever worker answers it) adds up every worker's.
The variable must be set before prometheus_client is imported (`serve` sets it before gunicorn
starts; server.observability never imports this module). Without it (`paycode-server run`)
the samples live in the one process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from flask import Flask, Response, current_app, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from paycode.server import services
from paycode.server.charge.planning import RECORDED_FAILURES, ChargePlan
from paycode.server.charge.result import NONCE_REPLAYED, STORED, TERMINAL_REVOKED
from paycode.server.database.engine import read_only
from paycode.server.operations.metric_buffer import MetricBuffer
from paycode.server.operations.observability import (
    MULTIPROC_ENV,
    annotate,
    mask_code,
    route_of_request,
)
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.errors import ApiError
from paycode.shared.versions.base import Reason
from paycode.shared.versions.registry import VERSIONS

LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Fine around the charge's p99 target (25 ms)."""
DB_GAUGES_TTL_S = 15.0
BACKLOG_COUNT_MAX = 1_000_000
"""The backlog count stops here: a scrape never scans an unbounded number of rows."""
CLAIMS_COUNT_MAX = 10_000_000
STATEMENT_TIMEOUT_MS = 2000
OUTBOX_TABLE = "notification_outbox"
CHARGE_ENDPOINT = "charges.create_charge"
UNKNOWN = "unknown"
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
"""Any other method is labelled "other": a caller cannot mint label values."""

VERIFICATION_REASONS = frozenset(
    {reason.value for reason in Reason}
    | {ErrorCode.CODE_MALFORMED, ErrorCode.CODE_REPLAYED, ErrorCode.DEVICE_LOCKED}
)
"""Outcomes that say the code itself did not pay (as opposed to the money or the request)."""
_OUTCOME_NAMES = {
    PaymentStatus.SUCCEEDED: "succeeded",
    ErrorCode.CONFIRMATION_REQUIRED: "pending",
    STORED: "idempotent_replay",
    TERMINAL_REVOKED: ErrorCode.UNAUTHORIZED,
    NONCE_REPLAYED: ErrorCode.UNAUTHORIZED,
}

_LEAVES_PAYMENT = frozenset(
    {PaymentStatus.SUCCEEDED, ErrorCode.CONFIRMATION_REQUIRED} | RECORDED_FAILURES
)
"""Outcomes whose payment row exists: the log line names it."""

_log = logging.getLogger("paycode.metrics")

CHARGES = Counter(
    "paycode_charges",
    "POST /v1/charges by outcome: succeeded, pending (waits for the PIN), idempotent_replay "
    "(a retry answered from its stored reply), or the stable error code",
    ["outcome", "code_version"],
)
VERIFICATION_FAILURES = Counter(
    "paycode_verification_failures",
    "Charges refused because of the code itself, by reason",
    ["reason", "code_version"],
)
REQUEST_SECONDS = Histogram(
    "paycode_http_request_duration_seconds",
    "Time from routing to response, by URL rule (never the raw path) and status",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS_S,
)
BUFFER = MetricBuffer()
"""Every sample of this process goes through it (see the module's docstring)."""


def flush() -> None:
    """Add every held sample to the metrics now (a scrape does; tests that read REGISTRY too)."""
    BUFFER.flush()


def version_label(code: object) -> str:
    """The version a code's leading characters name, or "unknown": a bounded label."""
    if isinstance(code, str):
        stripped = code.strip()
        for codec in VERSIONS:
            if codec.matches(stripped):
                return codec.version
    return UNKNOWN


def record_charge(outcome: str, plan: ChargePlan, code: object) -> None:
    """Count a charge that reached the database transaction, and add it to the log line.
    `outcome` is charge_store's (a reply name of the plan, or STORED, RATE_LIMITED, ...)."""
    name = _OUTCOME_NAMES.get(outcome, outcome)
    version = plan.accepted.version if plan.accepted is not None else version_label(code)
    g.paycode_charge_counted = True
    BUFFER.inc(CHARGES, (name, version))
    if name in VERIFICATION_REASONS:
        BUFFER.inc(VERIFICATION_FAILURES, (name, version))
    annotate(
        outcome=name,
        code_version=version,
        payment_code=mask_code(code) if isinstance(code, str) else None,
        payment_id=plan.payment_id if outcome in _LEAVES_PAYMENT else None,
    )


def record_offline_charge(outcome: str, code: object, payment_id: str | None = None) -> None:
    """Count a v4 charge (paycode.server.charge.offline_charge runs no ChargePlan) like any:
    its outcome ("succeeded", "idempotent_replay" or the refusal's code) under version v4."""
    g.paycode_charge_counted = True
    BUFFER.inc(CHARGES, (outcome, "v4"))
    if outcome in VERIFICATION_REASONS:
        BUFFER.inc(VERIFICATION_FAILURES, (outcome, "v4"))
    annotate(
        outcome=outcome,
        code_version="v4",
        payment_code=mask_code(code) if isinstance(code, str) else None,
        payment_id=payment_id,
    )


def _observe(response: Response) -> Response:
    started_s = g.get("paycode_started_s")
    if started_s is None:
        return response
    status = response.status_code
    method = request.method if request.method in METHODS else "other"
    elapsed_s = time.perf_counter() - started_s
    BUFFER.observe(REQUEST_SECONDS, (method, route_of_request(), str(status)), elapsed_s)
    if request.endpoint == CHARGE_ENDPOINT and not g.get("paycode_charge_counted"):
        # Refused before its transaction (signature, body, Idempotency-Key): still a charge.
        outcome = g.get("paycode_error_code") or f"http_{status}"
        BUFFER.inc(CHARGES, (outcome, UNKNOWN))
    return response


# -- scrape-time gauges -------------------------------------------------------------------------


@dataclass
class _Cached:
    families: list[Metric]
    until_s: float


class DatabaseGauges(Collector):
    """Gauges read from the database at scrape time, cached DB_GAUGES_TTL_S per process.
    A query that fails (the outbox not created yet, the database down) leaves its gauge out
    of this scrape and is tried again on the next one after the cache expires."""

    def __init__(self, engine: Engine, *, ttl_s: float = DB_GAUGES_TTL_S) -> None:
        self._engine = engine
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._cached = _Cached([], 0.0)

    def collect(self) -> Iterator[Metric]:
        now_s = time.monotonic()
        with self._lock:
            if now_s >= self._cached.until_s:
                self._cached = _Cached(list(self._read()), now_s + self._ttl_s)
            families = self._cached.families
        yield from families

    def _read(self) -> Iterable[Metric]:
        try:
            with read_only(self._engine) as connection, connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.exec_driver_sql(
                        f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"
                    )
                backlog = outbox_backlog(connection)
                claims = claims_rows(connection)
        except SQLAlchemyError as error:
            _log.warning("metrics: database gauges unavailable (%s)", type(error).__name__)
            return
        if backlog is not None:
            yield GaugeMetricFamily(
                "paycode_webhook_backlog",
                "Merchant notifications not delivered yet (outbox rows still due, counted up "
                f"to {BACKLOG_COUNT_MAX})",
                value=backlog,
            )
        yield GaugeMetricFamily(
            "paycode_claims_rows",
            "Rows in the single-use claims table (PostgreSQL: the planner's estimate)",
            value=claims,
        )


def outbox_backlog(connection: Connection) -> int | None:
    """Outbox rows not delivered, or None while the outbox does not exist (migration 0007).
    Due and leased rows have next_attempt_at_s set, delivered and dead ones NULL: the count
    walks that column's index, and stops at BACKLOG_COUNT_MAX."""
    inspector = inspect(connection)
    if not inspector.has_table(OUTBOX_TABLE):
        return None
    columns = {column["name"] for column in inspector.get_columns(OUTBOX_TABLE)}
    if "next_attempt_at_s" in columns:
        pending = "next_attempt_at_s IS NOT NULL"
    elif "delivered_at_s" in columns:
        pending = "delivered_at_s IS NULL"
    else:
        return None
    query = (
        f"SELECT COUNT(*) FROM (SELECT 1 FROM {OUTBOX_TABLE} WHERE {pending} "  # noqa: S608
        "LIMIT :cap) AS backlog"
    )
    return int(connection.execute(text(query), {"cap": BACKLOG_COUNT_MAX}).scalar_one())


def claims_rows(connection: Connection) -> int:
    """PostgreSQL: pg_class.reltuples (kept by autovacuum), free; before the table's first
    ANALYZE, and on SQLite, a count bounded by CLAIMS_COUNT_MAX."""
    if connection.dialect.name == "postgresql":
        estimate = connection.execute(
            text("SELECT reltuples FROM pg_class WHERE oid = to_regclass('claims')")
        ).scalar()
        if estimate is not None and estimate >= 0:
            return int(estimate)
    query = "SELECT COUNT(*) FROM (SELECT 1 FROM claims LIMIT :cap) AS claims"
    return int(connection.execute(text(query), {"cap": CLAIMS_COUNT_MAX}).scalar_one())


# -- /metrics -----------------------------------------------------------------------------------


def render(gauges: Collector) -> bytes:
    """The exposition text: every worker's samples (multiprocess) or this process's, then the
    database gauges. This process's held samples are added first; other workers' are as recent
    as their last flush."""
    BUFFER.flush()
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        samples = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(samples, path=directory)  # type: ignore[no-untyped-call]
        text_out = generate_latest(samples)
    else:
        text_out = generate_latest(REGISTRY)
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(gauges)
    return text_out + generate_latest(scraped)


def init_app(app: Flask) -> None:
    """GET /metrics, and the latency observation after every request (after the request-id
    hook of server.observability.init_app, which starts the clock)."""
    app.extensions["paycode_db_gauges"] = DatabaseGauges(app.extensions["paycode_engine"])
    app.after_request(_observe)

    @app.get("/metrics")
    def metrics() -> Response:
        services.config().metrics.check()
        try:
            body = render(current_app.extensions["paycode_db_gauges"])
        except (OSError, ValueError) as error:  # the samples directory went away, say
            _log.error("metrics: cannot read the samples (%s)", type(error).__name__)
            raise ApiError(
                ErrorCode.METRICS_UNAVAILABLE, "metrics cannot be read now", status=503
            ) from None
        return Response(body, content_type=CONTENT_TYPE_LATEST)
