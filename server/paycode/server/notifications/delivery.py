"""Delivering the outbox (paycode.server.notifications.events): what `paycode-server worker` does
each pass.

    claim a batch of due rows (commit) -> POST each, signed -> record the outcome (commit)

A claim moves the row's `next_attempt_at_s` one lease into the future and counts the attempt,
and is committed before any HTTP call. Several workers on several hosts never claim the same
row at once (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: the BEGIN IMMEDIATE write lock), and a
worker killed mid-delivery loses nothing: when its lease ends the row is due again, so every
event is delivered at least once, under the same event id. 2xx is delivered; anything else
(another status, a redirect, a timeout, a refused connection) waits backoff_s x 2^(attempts-1),
capped, and after attempts_max attempts the row is dead: kept for the operator
(`paycode-server notifications list --dead`, `notifications retry EVENT_ID`).

Signature: `Paycode-Signature` = base64(HMAC-SHA256(key, timestamp + "." + body)), with the
merchant's notification key and the `Paycode-Timestamp` sent beside it (docs/operations.md
shows how a merchant verifies it). The secret and the body are never logged; an error is
recorded as a short reason ("http 500", "timeout after 5 s").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from paycode.server.database.models import Merchant, Notification
from paycode.server.notifications import destinations
from paycode.server.operations.purge import PURGE_BATCH_ROWS, PURGE_BATCHES_MAX, delete_in_batches
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.errors import ConfigError

USER_AGENT: Final = "paycode-notify/1"
ALLOWED_SCHEMES: Final = frozenset({"http", "https"})
RESPONSE_BYTES_MAX: Final = 4096
"""A receiver's answer is read this far (and dropped): its status is all that counts."""
ERROR_CHARS_MAX: Final = 200
DELIVERED_KEPT_S: Final = 30 * 86_400
"""Delivered rows are purged after 30 days; dead ones stay until an operator acts."""
BACKOFF_EXPONENT_MAX: Final = 30


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """The worker's delivery policy (environment variables in brackets)."""

    timeout_s: float = 5.0  # PAYCODE_NOTIFY_TIMEOUT_S: per connect/read of one POST
    backoff_s: float = 30.0  # PAYCODE_NOTIFY_BACKOFF_S: wait after the first failure
    backoff_max_s: float = 3600.0  # PAYCODE_NOTIFY_BACKOFF_MAX_S: longest wait
    attempts_max: int = 8  # PAYCODE_NOTIFY_ATTEMPTS_MAX: then the row is dead
    lease_s: float = 60.0  # PAYCODE_NOTIFY_LEASE_S: a claimed row is due again after it
    batch_rows: int = 10  # PAYCODE_NOTIFY_BATCH_ROWS: rows claimed per transaction
    batches_max: int = 50  # PAYCODE_NOTIFY_BATCHES_MAX: batches per worker pass
    allow_private: bool = False  # PAYCODE_NOTIFY_ALLOW_PRIVATE: receivers on a private network

    @classmethod
    def parse(cls, env: Mapping[str, str]) -> DeliverySettings:
        """From the environment variables in `env` (ServerConfig.from_env hands them in)."""
        base = cls()
        settings = cls(
            timeout_s=_number(env, "PAYCODE_NOTIFY_TIMEOUT_S", base.timeout_s, 0.05, 120.0),
            backoff_s=_number(env, "PAYCODE_NOTIFY_BACKOFF_S", base.backoff_s, 0.01, 86_400.0),
            backoff_max_s=_number(
                env, "PAYCODE_NOTIFY_BACKOFF_MAX_S", base.backoff_max_s, 0.01, 7 * 86_400.0
            ),
            attempts_max=int(
                _number(env, "PAYCODE_NOTIFY_ATTEMPTS_MAX", base.attempts_max, 1, 100)
            ),
            lease_s=_number(env, "PAYCODE_NOTIFY_LEASE_S", base.lease_s, 0.1, 86_400.0),
            batch_rows=int(_number(env, "PAYCODE_NOTIFY_BATCH_ROWS", base.batch_rows, 1, 1000)),
            batches_max=int(
                _number(env, "PAYCODE_NOTIFY_BATCHES_MAX", base.batches_max, 1, 10_000)
            ),
            allow_private=destinations.allow_private(env),
        )
        if settings.lease_s <= settings.timeout_s:
            raise ConfigError("PAYCODE_NOTIFY_LEASE_S must be longer than PAYCODE_NOTIFY_TIMEOUT_S")
        return settings

    def backoff_for_s(self, attempts: int) -> float:
        """The wait after the `attempts`-th failed attempt: backoff_s x 2^(attempts-1), capped."""
        assert attempts >= 1
        exponent = min(attempts - 1, BACKOFF_EXPONENT_MAX)
        return min(self.backoff_max_s, self.backoff_s * float(2**exponent))


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as error:
        raise ConfigError(f"{name} must be a number") from error
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}")
    return value


# -- signing and sending ---------------------------------------------------------------------


def signature(key: bytes, timestamp_s: int, body: bytes) -> str:
    """base64(HMAC-SHA256(key, "<timestamp>." + body)): the Paycode-Signature header."""
    mac = hmac.new(key, str(timestamp_s).encode("ascii") + b"." + body, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def signed_headers(key: bytes, event_id: str, event_type: str, body: bytes) -> dict[str, str]:
    timestamp_s = int(time.time())
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Paycode-Event-Id": event_id,
        "Paycode-Event-Type": event_type,
        "Paycode-Timestamp": str(timestamp_s),
        "Paycode-Signature": signature(key, timestamp_s, body),
    }


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as what it is (a 3xx, not delivered): a notification is never
    carried to another host, nor re-sent as a GET."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_OPENERS: Final = {
    True: urllib.request.build_opener(_NoRedirects()),
    False: urllib.request.build_opener(_NoRedirects(), *destinations.public_only_handlers()),
}
"""By PAYCODE_NOTIFY_ALLOW_PRIVATE: with it, any address; without, public ones only."""


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout_s: float,
    *,
    allow_private: bool = False,
) -> str | None:
    """POST once; None when the receiver answered 2xx, else a short reason (no secret, no URL,
    no body). Without `allow_private`, a host resolving to any non-public address is refused
    before a connection is made (paycode.server.notifications.destinations)."""
    if urlsplit(url).scheme not in ALLOWED_SCHEMES:
        return "the notify URL is not http(s)"
    # S310: the scheme is http or https, checked above (never file: or a custom one).
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310
    try:
        with _OPENERS[allow_private].open(request, timeout=timeout_s) as response:
            response.read(RESPONSE_BYTES_MAX)
            status = int(response.status)
    except urllib.error.HTTPError as error:
        status = error.code
        error.close()
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
        return _reason(error, timeout_s)
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"http {status} (redirects are not followed)"
    return f"http {status}"


def _reason(error: BaseException, timeout_s: float) -> str:
    cause = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(cause, TimeoutError):
        return f"timeout after {timeout_s:g} s"
    if isinstance(cause, OSError) and cause.strerror:
        return f"connection failed: {cause.strerror}"[:ERROR_CHARS_MAX]
    return f"connection failed: {type(cause).__name__}"[:ERROR_CHARS_MAX]


# -- claiming and recording ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    """A row this worker holds until `lease_until_s`; `attempts` counts this attempt."""

    event_id: str
    event_type: str
    attempts: int
    payload: str = field(repr=False)
    url: str | None = field(repr=False)
    key: bytes | None = field(repr=False)
    problem: str | None = None
    """Why it cannot be sent at all (no notify_url, no secret): recorded as its failure."""


def claim_due(
    session: Session, box: SecretBox, settings: DeliverySettings, now_s: float
) -> list[Claimed]:
    """Claim up to batch_rows due rows, oldest due first, and commit the claim."""
    rows = session.execute(
        select(
            Notification.event_id,
            Notification.event_type,
            Notification.attempts,
            Notification.payload,
            Notification.merchant_id,
        )
        .where(Notification.next_attempt_at_s <= now_s)
        .order_by(Notification.next_attempt_at_s)
        .limit(settings.batch_rows)
        .with_for_update(skip_locked=True, of=Notification)
    ).all()
    claimed: list[Claimed] = []
    for row in rows:
        taken = session.execute(
            update(Notification)
            .where(
                Notification.event_id == row.event_id,
                Notification.attempts == row.attempts,
                Notification.next_attempt_at_s <= now_s,
            )
            .values(attempts=row.attempts + 1, next_attempt_at_s=now_s + settings.lease_s),
            execution_options={"synchronize_session": False},
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            claimed.append(_target(session, box, row))
    session.commit()
    return claimed


def _target(session: Session, box: SecretBox, row: Any) -> Claimed:
    """Where and with which key the row goes: read now, so a changed URL or key applies."""
    merchant = session.execute(
        select(Merchant.notify_url, Merchant.key_id, Merchant.notify_secret_sealed).where(
            Merchant.id == row.merchant_id
        )
    ).one_or_none()
    base = (row.event_id, row.event_type, row.attempts + 1, row.payload)
    if merchant is None or merchant.notify_url is None:
        return Claimed(*base, url=None, key=None, problem="the merchant has no notify_url")
    if merchant.notify_secret_sealed is None or merchant.key_id is None:
        problem = "the merchant has no notification secret (merchants notify-secret --rotate)"
        return Claimed(*base, url=None, key=None, problem=problem)
    try:
        key = box.open(merchant.key_id, merchant.notify_secret_sealed, row_id=row.merchant_id)
    except LookupError:
        problem = "the notification secret does not open (is its master key configured?)"
        return Claimed(*base, url=None, key=None, problem=problem)
    return Claimed(*base, url=merchant.notify_url, key=key)


def _record(
    session: Session, claimed: Claimed, error: str | None, settings: DeliverySettings
) -> str:
    """Store how the attempt ended; 'delivered', 'failed' or 'dead' ('lost' when the row was
    re-claimed after this worker's lease ended: the other worker's outcome stands)."""
    now_s = time.time()
    if error is None:
        values: dict[str, Any] = {
            "delivered_at_s": now_s,
            "next_attempt_at_s": None,
            "dead_at_s": None,
            "last_error": None,
        }
        outcome = "delivered"
    elif claimed.attempts >= settings.attempts_max:
        values = {"dead_at_s": now_s, "next_attempt_at_s": None, "last_error": error}
        outcome = "dead"
    else:
        retry_at_s = now_s + settings.backoff_for_s(claimed.attempts)
        values = {"next_attempt_at_s": retry_at_s, "last_error": error}
        outcome = "failed"
    condition = [Notification.event_id == claimed.event_id, Notification.delivered_at_s.is_(None)]
    if error is not None:  # a success is a success, whoever holds the row now
        condition.append(Notification.attempts == claimed.attempts)
    result = session.execute(
        update(Notification).where(*condition).values(values),
        execution_options={"synchronize_session": False},
    )
    session.commit()
    return outcome if result.rowcount == 1 else "lost"  # type: ignore[attr-defined]


def _release(session: Session, claimed: list[Claimed]) -> None:
    """Hand back rows this worker claimed but will not send (its lease is running out, or it
    is stopping): due now, the attempt not counted."""
    now_s = time.time()
    for row in claimed:
        session.execute(
            update(Notification)
            .where(
                Notification.event_id == row.event_id,
                Notification.attempts == row.attempts,
                Notification.delivered_at_s.is_(None),
            )
            .values(attempts=row.attempts - 1, next_attempt_at_s=now_s),
            execution_options={"synchronize_session": False},
        )
    session.commit()


def deliver(claimed: Claimed, settings: DeliverySettings) -> str | None:
    """Send one claimed row; None when delivered, else why not."""
    if claimed.problem is not None or claimed.url is None or claimed.key is None:
        return claimed.problem or "nowhere to send it"
    body = claimed.payload.encode("utf-8")
    headers = signed_headers(claimed.key, claimed.event_id, claimed.event_type, body)
    allow_private = settings.allow_private
    return post(claimed.url, body, headers, settings.timeout_s, allow_private=allow_private)


# -- one worker pass ---------------------------------------------------------------------------


@dataclass
class PassReport:
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    released: int = 0
    purged: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "dead": self.dead,
            "released": self.released,
            "purged": self.purged,
        }


def deliver_due(
    session: Session,
    box: SecretBox,
    settings: DeliverySettings,
    *,
    stopping: Callable[[], bool] = lambda: False,
) -> PassReport:
    """Deliver what is due, at most batches_max batches; commits as it goes."""
    report = PassReport()
    for _batch in range(settings.batches_max):
        claimed = claim_due(session, box, settings, time.time())
        if not claimed:
            break
        _deliver_batch(session, claimed, settings, report, stopping)
        if stopping():
            break
    report.purged = purge_delivered(session, time.time())
    return report


def _deliver_batch(
    session: Session,
    claimed: list[Claimed],
    settings: DeliverySettings,
    report: PassReport,
    stopping: Callable[[], bool],
) -> None:
    """Send the batch in order while the lease leaves room for one more full attempt."""
    started = time.monotonic()
    for index, row in enumerate(claimed):
        out_of_lease = time.monotonic() - started + settings.timeout_s >= settings.lease_s
        if out_of_lease or stopping():
            rest = claimed[index:]
            _release(session, rest)
            report.released += len(rest)
            return
        outcome = _record(session, row, deliver(row, settings), settings)
        if outcome == "delivered":
            report.delivered += 1
        elif outcome == "dead":
            report.dead += 1
        elif outcome == "failed":
            report.failed += 1


def purge_delivered(session: Session, now_s: float, *, batches_max: int = PURGE_BATCHES_MAX) -> int:
    """Delete rows delivered more than DELIVERED_KEPT_S ago, in bounded batches."""
    return delete_in_batches(
        session,
        Notification,
        condition=Notification.delivered_at_s < now_s - DELIVERED_KEPT_S,
        key=(Notification.event_id,),
        batch_rows=PURGE_BATCH_ROWS,
        batches_max=batches_max,
    )
