"""The HTTP client the wallet and the till call the server with (docs/api.md). Standard
library only.

Every call has a bounded timeout. A network failure raises ServerUnreachable (ServerNotReached
when no connection was made, so the server cannot have seen the request); a problem
response (RFC 9457) raises ServerRejected with the server's stable code. Every response's
server time feeds the caller's clock-offset estimate. Requests are signed by a `Signer` the
caller passes: the wallet's device signature, the till's terminal HMAC.
"""

from __future__ import annotations

import email.utils
import errno
import http.client
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from paycode.shared.errors import ServerNotReached, ServerRejected, ServerUnreachable

TIMEOUT_S = 10.0

Signer = Callable[[str, str, bytes], dict[str, str]]
"""(method, path with query, body bytes) -> signature headers over the exact bytes sent."""
RESPONSE_BYTES_MAX = 1 << 20
NO_CONNECTION_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL}
)
"""connect() failed with these: the request never left. A timeout is not among them: a
connect that timed out cannot be told here from a send or a read that did."""
SERVER_TIME_MAX = 1e11
"""Unix seconds (the year 5138): a server_time beyond it (or NaN) is ignored, not believed."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: dict[str, Any]
    clock_offset_s: float | None
    """server time - local time, from the body's server_time or the Date header."""


@dataclass(frozen=True, slots=True)
class WireRequest:
    """One HTTP request as it goes out: the bytes are already signed."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None


@dataclass(frozen=True, slots=True)
class WireReply:
    """What came back: the status, the body (at most RESPONSE_BYTES_MAX) and the Date header."""

    status: int
    body: bytes
    date: str | None


class Transport(Protocol):
    """Carries a WireRequest to the server and its reply back."""

    def send(self, request: WireRequest, timeout_s: float) -> WireReply:
        """The server's reply, or ServerUnreachable when there is none to read: no
        connection, a timeout, or an answer cut before its end."""
        ...


class UrllibTransport:
    """The network, through the standard library's urllib."""

    def send(self, request: WireRequest, timeout_s: float) -> WireReply:
        outgoing = urllib.request.Request(  # noqa: S310 - ServerClient checked the scheme
            request.url, data=request.body, method=request.method, headers=dict(request.headers)
        )
        base_url = _origin(request.url)
        try:
            with urllib.request.urlopen(outgoing, timeout=timeout_s) as reply:  # noqa: S310 - scheme checked
                return WireReply(
                    reply.status, reply.read(RESPONSE_BYTES_MAX), reply.headers.get("Date")
                )
        except urllib.error.HTTPError as error:
            raw = _problem_bytes(error, base_url)
            return WireReply(error.code, raw, error.headers.get("Date"))
        except (
            urllib.error.URLError,
            http.client.HTTPException,  # an answer cut inside its status line or body
            TimeoutError,
            ConnectionError,
            OSError,
        ) as error:
            reason = getattr(error, "reason", error)
            if isinstance(error, urllib.error.URLError) and _never_connected(reason):
                raise ServerNotReached(f"cannot connect to {base_url}: {reason}") from error
            raise ServerUnreachable(f"cannot reach {base_url}: {reason}") from error


def _never_connected(reason: object) -> bool:
    """urllib wraps in URLError what failed while connecting or sending (what failed while
    reading the answer comes bare); of those, a refused connection, a missing route or an
    unknown host mean no connection was ever made."""
    if isinstance(reason, socket.gaierror):
        return True
    return isinstance(reason, OSError) and reason.errno in NO_CONNECTION_ERRNOS


NETWORK: Final = UrllibTransport()
MOUNTS_MAX: Final = 64
_mounted: dict[str, Transport] = {}


def mount(base_url: str, transport: Transport) -> None:
    """Send every call to `base_url` (scheme, host and port) through `transport` instead of
    the network, in this process: how a program that embeds the server (the test suite, a
    benchmark) lets the wallet and the till reach it with no socket."""
    origin = _origin(base_url)
    assert origin in _mounted or len(_mounted) < MOUNTS_MAX, "unmount what is no longer served"
    _mounted[origin] = transport


def unmount(base_url: str) -> None:
    _mounted.pop(_origin(base_url), None)


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class ServerClient:
    def __init__(self, base_url: str, *, timeout_s: float = TIMEOUT_S) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ServerUnreachable(
                f"server URL must be http(s)://host[:port], got {base_url[:80]!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        bearer: str | None = None,
        signer: Signer | None = None,
        idempotency_key: str | None = None,
    ) -> Response:
        data = b"" if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        if signer is not None:
            headers.update(signer(method, path, data))
        body_bytes = data if body is not None else None
        return self._send(WireRequest(method, self.base_url + path, headers, body_bytes))

    def _send(self, request: WireRequest) -> Response:
        transport = _mounted.get(_origin(self.base_url), NETWORK)
        sent_at = time.time()
        reply = transport.send(request, self.timeout_s)
        received_at = time.time()
        status, raw = reply.status, reply.body
        body = _json_body(raw)
        offset = _clock_offset(body, reply.date, (sent_at + received_at) / 2)
        if status >= 400:
            code = str(body.get("code") or f"http_{status}")
            detail = str(body.get("detail") or body.get("title") or f"HTTP {status}")
            raise ServerRejected(code, detail, status=status, clock_offset_s=offset)
        if not _whole_json_object(raw):
            # A success whose reply was cut short (the connection dropped mid-answer) tells
            # nothing of what the server did: no answer, so the caller retries with its
            # Idempotency-Key and hears the stored reply, rather than reading {} as a failure.
            raise ServerUnreachable(f"{self.base_url} answered {status}, but the reply was cut")
        return Response(status, body, offset)


def _problem_bytes(error: urllib.error.HTTPError, base_url: str) -> bytes:
    """A problem answer's body; a connection that breaks while it is read gave no answer."""
    try:
        raw = error.read(RESPONSE_BYTES_MAX)
    except (http.client.HTTPException, OSError) as cut:
        raise ServerUnreachable(f"{base_url} answered {error.code}, then broke: {cut}") from cut
    # A body shorter than its Content-Length was cut (a server killed mid-answer): read()
    # returns the part silently, and an empty problem would read as a refusal "http_422".
    length = error.headers.get("Content-Length", "")
    if length.isascii() and length.isdigit() and len(raw) < min(int(length), RESPONSE_BYTES_MAX):
        raise ServerUnreachable(f"{base_url} answered {error.code}, but the reply was cut")
    return raw


def _whole_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, >4300 digits, deep nesting
        return False


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw) if raw else {}
    except (ValueError, RecursionError):  # not JSON, not UTF-8, >4300 digits, deep nesting
        return {}
    return body if isinstance(body, dict) else {}


def _clock_offset(
    body: dict[str, Any], date_header: str | None, local_mid_s: float
) -> float | None:
    server_time = body.get("server_time")
    # A huge integer or NaN/Infinity (json reads both) must not become the wallet's clock.
    if (
        isinstance(server_time, int | float)
        and not isinstance(server_time, bool)
        and abs(server_time) < SERVER_TIME_MAX
    ):
        return float(server_time) - local_mid_s
    if date_header:
        try:
            return email.utils.parsedate_to_datetime(date_header).timestamp() - local_mid_s
        except (TypeError, ValueError):
            return None
    return None
