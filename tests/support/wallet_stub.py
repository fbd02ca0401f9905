"""A small real HTTP server that plays the server's wallet API, for testing the wallet.

It speaks real HTTP on 127.0.0.1 (ThreadingHTTPServer in a background thread) and uses the
same `shared` code a real server would: grants come from `shared.enrollment.build_grant`,
signed requests are checked with `shared.wallet_auth.signature_valid`, and tests verify the
wallet's codes with `shared.verify.verify_code` against the records kept here. Nothing about
the wallet is mocked; only the server is this small.

    with running_stub() as stub:
        client = ServerClient(stub.url)
        ...
        assert isinstance(stub.verify(code_text), Accepted)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import json
import os
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from paycode.shared import wallet_auth
from paycode.shared.enrollment import ED25519_BYTES, SYMMETRIC_KEY_BYTES, build_grant
from paycode.shared.verify import verify_code
from paycode.shared.versions.base import DeviceRecord, Verification, VerifierKeys, VerifyContext
from paycode.shared.versions.registry import by_name

BODY_BYTES_MAX = 64 * 1024
HISTORY_LIMIT_MAX = 100
SESSION_TTL_S = 600
SHUTDOWN_POLL_S = 0.02
DEFAULT_USERS = {"alice": "correct horse battery staple"}
DEFAULT_ACCOUNTS = ({"currency": "CNY", "balance": "12.50", "balance_minor": 1250},)


class Problem(Exception):
    """An RFC 9457 problem the handler turns into a response."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail

    def as_json(self) -> dict[str, object]:
        return {
            "type": f"https://paycode.example/problems/{self.code}",
            "title": self.code.replace("_", " ").capitalize(),
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class WalletStub:
    """The server's state. Tests read and tweak the attributes directly."""

    users: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_USERS))
    accounts: list[dict[str, Any]] = field(default_factory=lambda: list(DEFAULT_ACCOUNTS))
    history_items: list[dict[str, Any]] = field(default_factory=list)
    reenroll: dict[str, str] | None = None
    """Set: balance and history answers carry it, as the server's for a deprecated version."""
    server_time_offset_s: float = 0.0
    """The server's clock is the real clock plus this."""
    counter_max_override: int | None = None
    """Grant fewer codes per step than the version allows (the grant carries counter_max)."""
    url: str = ""
    devices: dict[tuple[str, bytes], DeviceRecord] = field(default_factory=dict)
    """(version, handle) -> record: v1/v2 hold the HMAC key, v3 the Ed25519 public key."""
    device_index: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    """device_id -> (version, handle), for signed requests."""
    seen: list[SeenRequest] = field(default_factory=list)
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    _idempotent: dict[tuple[str, str], dict[str, object]] = field(default_factory=dict)
    _nonces: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.hiding_keys = {v: os.urandom(SYMMETRIC_KEY_BYTES) for v in ("v1", "v2")}
        seal_private = X25519PrivateKey.generate()
        self.seal_private_key = seal_private.private_bytes_raw()
        self.seal_public_key = seal_private.public_key().public_bytes_raw()

    # --- what tests use ------------------------------------------------------------------

    def now_s(self) -> float:
        return time.time() + self.server_time_offset_s

    @property
    def keys(self) -> VerifierKeys:
        hiding: dict[str, tuple[bytes, ...]] = {v: (key,) for v, key in self.hiding_keys.items()}
        return VerifierKeys(hiding_keys=hiding, seal_keys=(self.seal_private_key,))

    def lookup(self, version: str, handle: bytes) -> DeviceRecord | None:
        return self.devices.get((version, handle))

    def verify(self, text: str, *, now_s: float | None = None) -> Verification:
        """Verify a wallet's code as the server would, at server time unless told."""
        at_s = self.now_s() if now_s is None else now_s
        return verify_code(text, VerifyContext(at_s, self.lookup, self.keys))

    def record_for(self, device_id: str) -> DeviceRecord:
        return self.devices[self.device_index[device_id]]

    # --- API -----------------------------------------------------------------------------

    def create_session(self, body: dict[str, Any]) -> tuple[int, dict[str, object]]:
        user, password = str(body.get("user")), body.get("password")
        if not isinstance(password, str) or self.users.get(user) != password:
            raise Problem(401, "unauthorized", "unknown user or wrong password")
        token = secrets.token_urlsafe(24)
        expires_s = self.now_s() + SESSION_TTL_S
        with self._lock:
            self._tokens[token] = (user, expires_s)
        expires_at = datetime.fromtimestamp(expires_s, UTC).isoformat(timespec="seconds")
        return 201, {"token": token, "expires_at": expires_at, "server_time": self.now_s()}

    def enroll_device(
        self, body: dict[str, Any], authorization: str, idempotency_key: str
    ) -> tuple[int, dict[str, object]]:
        user = self._session_user(authorization)
        if not idempotency_key:
            raise Problem(400, "idempotency_key_required", "POST needs an Idempotency-Key")
        with self._lock:
            earlier = self._idempotent.get((user, idempotency_key))
        if earlier is not None:
            return 201, earlier
        version = body.get("version")
        if version not in ("v1", "v2", "v3"):
            raise Problem(400, "version_unknown", f"unknown code version {version!r}")
        grant = self._grant(version, body)
        with self._lock:
            self._idempotent[(user, idempotency_key)] = grant
        return 201, grant

    def signed_get(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
        self._check_signature("GET", path, headers, b"")
        parsed = urllib.parse.urlsplit(path)
        advice = {} if self.reenroll is None else {"reenroll": self.reenroll}
        if parsed.path == "/v1/wallet/balance":
            return 200, {"accounts": self.accounts, "server_time": self.now_s(), **advice}
        if parsed.path == "/v1/wallet/history":
            query = urllib.parse.parse_qs(parsed.query)
            try:
                limit = int(query.get("limit", ["20"])[0])
            except ValueError as error:
                raise Problem(400, "limit_invalid", "limit must be an integer") from error
            if not 1 <= limit <= HISTORY_LIMIT_MAX:
                raise Problem(400, "limit_invalid", f"limit must be 1..{HISTORY_LIMIT_MAX}")
            return 200, {
                "items": self.history_items[:limit],
                "server_time": self.now_s(),
                **advice,
            }
        raise Problem(404, "not_found", f"no route {parsed.path}")

    # --- internals -----------------------------------------------------------------------

    def _session_user(self, authorization: str) -> str:
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            session = self._tokens.get(token) if scheme == "Bearer" else None
        if session is None or session[1] < self.now_s():
            raise Problem(401, "unauthorized", "a valid session token is required")
        return session[0]

    def _grant(self, version: str, body: dict[str, Any]) -> dict[str, object]:
        codec = by_name(version)
        handle = codec.new_handle()
        device_id = f"dev_{secrets.token_hex(8)}"
        if version == "v3":
            public_key = _b64_field(body, "public_key", ED25519_BYTES)
            grant = build_grant(
                version=version,
                device_id=device_id,
                handle=handle,
                server_time_s=self.now_s(),
                seal_public_key=self.seal_public_key,
            )
            record_key = public_key
        else:
            device_key = os.urandom(SYMMETRIC_KEY_BYTES)
            grant = build_grant(
                version=version,
                device_id=device_id,
                handle=handle,
                server_time_s=self.now_s(),
                device_key=device_key,
                hiding_key=self.hiding_keys[version],
            )
            record_key = device_key
        if self.counter_max_override is not None:
            grant["counter_max"] = self.counter_max_override
        with self._lock:
            self.devices[(version, handle)] = DeviceRecord(device_id, handle, record_key)
            self.device_index[device_id] = (version, handle)
        return grant

    def _check_signature(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> None:
        denied = Problem(401, "unauthorized", "request signature is missing or wrong")
        device_id = headers.get("Paycode-Device", "")
        nonce = headers.get("Paycode-Nonce", "")
        signature = headers.get("Paycode-Signature", "")
        try:
            timestamp_s = int(headers.get("Paycode-Timestamp", ""))
        except ValueError as error:
            raise denied from error
        where = self.device_index.get(device_id)
        if where is None or not nonce:
            raise denied
        if abs(timestamp_s - self.now_s()) > wallet_auth.TIMESTAMP_SKEW_S_MAX:
            raise Problem(401, "unauthorized", "request timestamp is too far from server time")
        record = self.devices[where]
        message = wallet_auth.signing_message(method, path, timestamp_s, nonce, body)
        if not wallet_auth.signature_valid(where[0], record.key, message, signature):
            raise denied
        with self._lock:
            if nonce in self._nonces:
                raise Problem(401, "unauthorized", "request nonce was already used")
            self._nonces.add(nonce)


def _b64_field(body: dict[str, Any], name: str, size: int) -> bytes:
    value = body.get(name)
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise Problem(400, "enrollment_invalid", f"{name} must be {size} bytes of base64")
    return raw


Reply = tuple[int, dict[str, object]]
Route = Callable[[WalletStub, dict[str, str], bytes], Reply]


class _Handler(BaseHTTPRequestHandler):
    server: _StubHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `stub.seen` instead."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header follows the stub's clock, like every other time it reports."""
        return email.utils.formatdate(self.server.stub.now_s(), usegmt=True)

    def do_GET(self) -> None:
        self._dispatch(lambda stub, headers, _body: stub.signed_get(self.path, headers))

    def do_POST(self) -> None:
        def route(stub: WalletStub, headers: dict[str, str], body: bytes) -> Reply:
            data = _json_object(body)
            if self.path == "/v1/wallet/sessions":
                return stub.create_session(data)
            if self.path == "/v1/wallet/devices":
                authorization = headers.get("Authorization", "")
                return stub.enroll_device(data, authorization, headers.get("Idempotency-Key", ""))
            raise Problem(404, "not_found", f"no route {self.path}")

        self._dispatch(route)

    def _dispatch(self, route: Route) -> None:
        stub = self.server.stub
        headers = dict(self.headers.items())
        seen = SeenRequest(self.command, self.path, headers)
        with stub._lock:
            stub.seen.append(seen)
        content_type = "application/json"
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= BODY_BYTES_MAX:
                raise Problem(413, "body_too_large", "request body too large")
            status, payload = route(stub, headers, self.rfile.read(length))
        except Problem as problem:
            content_type = "application/problem+json"
            status, payload = problem.status, problem.as_json()
        seen.status = status
        self._reply(status, payload, content_type)

    def _reply(self, status: int, payload: dict[str, object], content_type: str) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise Problem(400, "bad_request", "body must be a JSON object") from error
    if not isinstance(data, dict):
        raise Problem(400, "bad_request", "body must be a JSON object")
    return data


class _StubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, stub: WalletStub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stub = stub


@contextlib.contextmanager
def running_stub(stub: WalletStub | None = None) -> Iterator[WalletStub]:
    """Serve `stub` (a fresh one by default) on 127.0.0.1 on a free port until the block ends."""
    state = stub if stub is not None else WalletStub()
    httpd = _StubHTTPServer(state)
    host, port = httpd.server_address[:2]
    state.url = f"http://{host!s}:{port}"
    thread = threading.Thread(
        target=httpd.serve_forever,
        kwargs={"poll_interval": SHUTDOWN_POLL_S},
        name="wallet-stub",
        daemon=True,
    )
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was just bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
