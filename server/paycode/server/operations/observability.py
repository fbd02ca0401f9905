"""Logs and the plumbing of metrics: JSON log lines with a request id, and no secret in them.

    mask_code(text)        "87...2797": a payment code as logs may show it (prefix, last 4)
    redact(text)           known secret shapes replaced (codes masked, tokens and keys dropped)
    RedactSecrets          the logging filter that applies redact() to every record
    JsonFormatter          one JSON object per line (paycode.server.operations.log_lines)
    configure_logging()    the root handler (`run`); GunicornJsonLogger does it for `serve`
    init_app(app)          request id in and out, one log line per request
    annotate(**fields)     add fields (terminal_id, device_id, ...) to this request's line
    MetricsAccess          who may read /metrics (PAYCODE_METRICS_TOKEN, else loopback only)
    prepare_multiprocess_dir, gunicorn_child_exit, gunicorn_worker_exit, gunicorn_on_exit:
                           `serve`'s metrics files

Nothing here imports prometheus_client: the gunicorn master imports this module, and the
metrics library must be imported only after `serve` has set PROMETHEUS_MULTIPROC_DIR
(paycode.server.operations.metrics holds the metrics themselves).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, has_request_context, request
from gunicorn.glogging import Logger as GunicornLogger  # type: ignore[import-untyped]

from paycode.server.operations.log_lines import JsonFormatter
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError, ConfigError
from paycode.shared.versions.registry import VERSIONS

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
"""A caller's request id is kept when it is 1-64 of these characters and looks like no secret."""
REQUEST_ID_BYTES = 8
LOGGER_NAME = "paycode"
REQUEST_LOGGER_NAME = "paycode.request"
MASK_TAIL_CHARS = 4
MASK_PREFIX_CHARS_MAX = 8
MASK_TEXT_CHARS_MIN = 12
"""Shorter text is masked whole: its last 4 characters would give away too much of it."""
METRICS_TOKEN_ENV = "PAYCODE_METRICS_TOKEN"  # noqa: S105 - a variable name
METRICS_TOKEN_CHARS_MIN = 16
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROC_PARENT = "prometheus"
MULTIPROC_STALE_DIRS_MAX = 256
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")

_REQUEST_LOG = logging.getLogger(REQUEST_LOGGER_NAME)


# -- masking and redaction ----------------------------------------------------------------------


def mask_code(text: str) -> str:
    """A payment code as a log may show it: its version prefix and its last 4 characters
    ("87...2797", "PC2...X5EA", "hQVDUFYw...Zz0="). Never enough to pay with or to link."""
    text = text.strip()
    for codec in VERSIONS:
        if text.startswith(codec.prefix):
            prefix = codec.prefix[:MASK_PREFIX_CHARS_MAX]
            break
    else:
        prefix = "?"
    if len(text) < MASK_TEXT_CHARS_MIN:
        return f"{prefix}..."
    return f"{prefix}...{text[-MASK_TAIL_CHARS:]}"


_SENSITIVE_NAMES = (
    r"password|passphrase|secret|token|pin|authorization|signature|api[_-]?key|master[_-]?key"
)
_SECRETS = re.compile(
    rf"(?P<key>(?i:\b(?:{_SENSITIVE_NAMES})\w*)[\"']?\s*[:=]\s*)"
    r"(?P<value>(?i:(?:bearer|basic)\s+)?(?:\"[^\"]*\"|'[^']*'|[^\s\"',;&}\[\]]+))"
    r"|(?P<bearer>(?i:\bbearer)\s+)[A-Za-z0-9._~+/=-]+"
    r"|(?P<v3>hQVDUFY[A-Za-z0-9+/]{16,}={0,2})"
    r"|(?P<v2>PC2[A-Z2-7]{16,})"
    r"|(?P<numeric>(?<![\w.+/])(?:\d[ -]?){17,23}\d(?![\w+/=]))"
    r"|(?P<blob>(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_-]{32,}={0,2})"
)
"""One pass finds every known shape: `key: value` and `key=value` pairs whose key names a
secret, bearer tokens, payment codes of each version (v1 also grouped in fours), and long
random-looking strings (base64 keys, terminal secrets, session tokens, hex keys)."""
_HEX = frozenset("0123456789abcdefABCDEF")
REDACTED = "[redacted]"
TRUSTED_FIELDS = frozenset(
    {"request_id", "method", "route", "client_addr", "error", "terminal_id", "device_id"}
    | {"outcome", "code_version", "payment_code", "payment_id"}
)
"""Fields of the request line that are built from checked values (a rule, an id, a stable
code, a masked code): the filter spends no time on them. Any other field is redacted."""


def _looks_random(blob: str) -> bool:
    """Base64 of a key mixes both cases; hex is all hex. Paths, UUIDs and words do not."""
    if set(blob) <= _HEX:
        return True
    return any(c.isupper() for c in blob) and any(c.islower() for c in blob)


def _replace(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "value":
        return match.group("key") + REDACTED
    if kind == "bearer":
        return match.group("bearer") + REDACTED
    if kind in ("v3", "v2"):
        return mask_code(match.group(0))
    if kind == "numeric":
        return mask_code(re.sub(r"[ -]", "", match.group(0)))
    return REDACTED if _looks_random(match.group(0)) else match.group(0)


def redact(text: str) -> str:
    """`text` with every known secret shape replaced; idempotent."""
    return _SECRETS.sub(_replace, text)


class RedactSecrets(logging.Filter):
    """Defence in depth on every handler: whatever a log call was given, the message, its
    arguments, the exception text and the structured fields leave with no secret shape in them.
    Code that logs still passes only masked codes (mask_code) and never a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        fields = getattr(record, "paycode", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                if isinstance(value, str) and key not in TRUSTED_FIELDS:
                    fields[key] = redact(value)
        return True


# -- JSON lines ---------------------------------------------------------------------------------


def _is_ours(handler: logging.Handler) -> bool:
    return isinstance(handler.formatter, JsonFormatter)


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr, like logging.basicConfig: only when the root logger has no
    handler yet (gunicorn's is set by gunicorn_logconfig, pytest keeps its own). Idempotent."""
    logging.getLogger(LOGGER_NAME).setLevel(level)
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets())
    root.addHandler(handler)
    root.setLevel(level)


class GunicornJsonLogger(GunicornLogger):  # type: ignore[misc]
    """gunicorn's `logger_class`: its own lines (and the access log, with --access-log) as JSON
    through the redacting filter, and the same root handler for the app's loggers."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(JsonFormatter())
                handler.addFilter(RedactSecrets())
        configure_logging()


# -- per request --------------------------------------------------------------------------------


def request_id_from(header: str | None) -> str:
    """The caller's X-Request-Id when it is well formed and looks like no secret, else a new one."""
    if header and REQUEST_ID_PATTERN.fullmatch(header) and redact(header) == header:
        return header
    return secrets.token_hex(REQUEST_ID_BYTES)


def annotate(**fields: str | int | None) -> None:
    """Add fields to this request's log line (no-op outside a request). Values must already be
    safe to log: ids, stable codes, masked codes (mask_code)."""
    if has_request_context():
        extra: dict[str, Any] | None = g.get("paycode_log_fields")
        if extra is not None:
            extra.update({k: v for k, v in fields.items() if v is not None})


def route_of_request() -> str:
    """The URL rule that matched ("/v1/payments/<payment_id>"), never the raw path."""
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def init_app(app: Flask) -> None:
    """Request id in (X-Request-Id) and out, and one JSON log line per request."""
    configure_logging()

    @app.before_request
    def _start() -> None:
        g.paycode_started_s = time.perf_counter()
        g.paycode_request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        g.paycode_log_fields = {}

    @app.after_request
    def _finish(response: Response) -> Response:
        request_id = g.get("paycode_request_id")
        started_s = g.get("paycode_started_s")
        if request_id is None or started_s is None:  # before_request did not run
            return response
        response.headers[REQUEST_ID_HEADER] = request_id
        fields: dict[str, Any] = {
            "request_id": request_id,
            "method": request.method[:16],
            "route": route_of_request(),
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started_s) * 1000, 3),
            "client_addr": request.remote_addr,
        }
        error = g.get("paycode_error_code")
        if error:
            fields["error"] = error
        fields.update(g.get("paycode_log_fields") or {})
        level = logging.ERROR if response.status_code >= 500 else logging.INFO
        if _REQUEST_LOG.isEnabledFor(level):
            # makeRecord + handle: what .log() does, without its stack walk (findCaller)
            record = _REQUEST_LOG.makeRecord(
                REQUEST_LOGGER_NAME, level, __file__, 0, "request", (), None,
                extra={"paycode": fields},
            )  # fmt: skip
            _REQUEST_LOG.handle(record)
        return response


# -- who may read /metrics ----------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsAccess:
    """With PAYCODE_METRICS_TOKEN set, /metrics wants `Authorization: Bearer <token>` from any
    address. Without it, only a loopback peer that did not come through a proxy may read."""

    token: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, env: Mapping[str, str]) -> MetricsAccess:
        """From the environment variables in `env` (ServerConfig.from_env hands them in)."""
        token = env.get(METRICS_TOKEN_ENV) or None
        if token is not None and (
            len(token) < METRICS_TOKEN_CHARS_MIN or not token.isascii() or not token.isprintable()
        ):
            raise ConfigError(
                f"{METRICS_TOKEN_ENV} must be at least {METRICS_TOKEN_CHARS_MIN} printable "
                "ASCII characters"
            )
        return cls(token)

    def check(self) -> None:
        """Raise the problem for a caller who may not read the metrics."""
        if self.token is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self.token.encode()
            ):
                raise ApiError(
                    ErrorCode.UNAUTHORIZED, "/metrics needs Authorization: Bearer <token>"
                )
            return
        if not _loopback(request.remote_addr) or any(h in request.headers for h in PROXY_HEADERS):
            raise ApiError(
                ErrorCode.FORBIDDEN,
                f"/metrics is served to loopback only; set {METRICS_TOKEN_ENV} to scrape "
                "from elsewhere",
            )


def _loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


# -- gunicorn: the multiprocess metrics directory ----------------------------------------------


def _live_pid_name(name: str) -> bool:
    """isascii() first: isdigit() alone takes "\u00b2", which int() refuses."""
    return name.isascii() and name.isdigit() and _alive(int(name))


def prepare_multiprocess_dir(instance: Path, pid: int | None = None) -> Path:
    """A fresh, empty instance/prometheus/<pid> for this `serve`. Directories left by servers
    that are gone (their pid is dead) are removed; a live server's are left alone."""
    pid = os.getpid() if pid is None else pid
    parent = instance / MULTIPROC_PARENT
    mine = parent / str(pid)
    try:
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in sorted(parent.iterdir())[:MULTIPROC_STALE_DIRS_MAX]:
            if stale.is_dir() and not _live_pid_name(stale.name):
                shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(mine, ignore_errors=True)
        mine.mkdir(mode=0o700)
    except OSError as error:
        raise ConfigError(
            f"cannot make the metrics directory {mine} ({error.strerror}): "
            "PAYCODE_INSTANCE must be a writable folder"
        ) from None
    return mine


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own directory from an earlier life of this pid: start afresh
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def gunicorn_child_exit(_server: Any, worker: Any) -> None:
    """gunicorn `child_exit` (in the master): the dead worker's live gauges go; its counters
    and histograms stay in the directory, so totals never drop when a worker restarts."""
    from prometheus_client import multiprocess  # noqa: PLC0415 - after the env is set

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def gunicorn_worker_exit(_server: Any, _worker: Any) -> None:
    """gunicorn `worker_exit` (in the worker, as it exits): the samples it still holds
    (paycode.server.operations.metric_buffer) are written before its process ends. A worker
    that never loaded the app has none, and imports nothing here."""
    metrics = sys.modules.get("paycode.server.operations.metrics")
    if metrics is not None:
        metrics.flush()


def gunicorn_on_exit(_server: Any) -> None:
    """gunicorn `on_exit`: this server's metrics directory goes with it."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory and Path(directory).parent.name == MULTIPROC_PARENT:
        shutil.rmtree(directory, ignore_errors=True)
