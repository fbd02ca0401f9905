"""The real server as the wallet's own tests need it: its verdict on a code at any time, the
requests a wallet sent it, a reply tampered on its way back, and its wallet clock moved.

    verifier = Verifier(server)                  # the server's rows and keys, no charge made
    assert isinstance(verifier.verify(text, now_s=T0_S), Accepted)
    with intercepted(server) as exchanges:       # an in-process server's wire, watched
        online.balance(wallet)
    assert exchanges[0].path == "/v1/wallet/balance"
    with intercepted(server, edit=json_edit(...)):   # a reply changed before the wallet reads it
        ...
    server_clock(monkeypatch, -600.0)           # the wallet API's clock 10 minutes behind

Nothing here stands in for the server: codes are judged by `shared.verify.verify_code` on the
device rows the server wrote and the keys it sealed (as its charge judges them, but at a time
the test chooses, and without claiming the code), and the wire belongs to the app in this
process (tests/support/servers.py, `server`). A tampered reply is the real one, edited: for the
tests of what a wallet does with an answer no honest server sends.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from paycode.appkit.http_client import WireReply, WireRequest, mount
from paycode.server.config import ServerConfig
from paycode.server.database.directory import Directory
from paycode.server.safety import keyring
from paycode.server.safety.secretbox import SecretBox
from paycode.server.testing import WsgiTransport
from paycode.server.wallets import sessions
from paycode.shared.verify import verify_code
from paycode.shared.versions.base import DeviceRecord, Verification, VerifierKeys, VerifyContext
from tests.support.servers import InProcessServer, Server

Edit = Callable[[WireRequest, WireReply], WireReply]
"""(request, the app's reply) -> the reply the wallet reads."""


@dataclass
class Verifier:
    """Judges codes as the server's charge does, on `server`'s own device rows and keys, at
    any time: what a wallet test needs for codes made at a chosen time (a charge judges them
    at the real time, and spends them)."""

    server: Server
    _directory: Directory = field(init=False, repr=False)
    _box: SecretBox = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._box = SecretBox.from_config(ServerConfig.from_env(self.server.env))
        self._directory = Directory(self.server.engine, self._box)

    @property
    def keys(self) -> VerifierKeys:
        return keyring.load_keys(self.server.engine, self._box)[0]

    @property
    def seal_public_key(self) -> bytes:
        """The public half of the v3 seal key the server hands out at enrollment."""
        return keyring.load_keys(self.server.engine, self._box)[1]["seal_public"]

    def lookup(self, version: str, handle: bytes) -> DeviceRecord | None:
        """The device row for (version, handle), read afresh: its key opened, its drift."""
        found = self._directory.device(version, handle, fresh=True)
        return None if found is None else found.record

    def verify(
        self, text: str, *, now_s: float | None = None, bindings: tuple[bytes, ...] = ()
    ) -> Verification:
        """The verdict on `text` at `now_s` (default: now) from a charging point with
        `bindings` (shared.binding.charging_point_bindings; none: a code bound nowhere)."""
        at_s = time.time() if now_s is None else now_s
        return verify_code(text, VerifyContext(at_s, self.lookup, self.keys, bindings=bindings))


@dataclass(frozen=True)
class Exchange:
    """One request a client sent and the reply it read."""

    request: WireRequest
    reply: WireReply

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def path(self) -> str:
        """The path with its query, as the request was signed."""
        parts = urllib.parse.urlsplit(self.request.url)
        return f"{parts.path}?{parts.query}" if parts.query else parts.path

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.request.headers)

    @property
    def status(self) -> int:
        return self.reply.status


@dataclass
class _Intercepting:
    """A Transport: the app's own (WsgiTransport), each exchange kept, each reply `edit`ed."""

    inner: WsgiTransport
    exchanges: list[Exchange]
    edit: Edit | None

    def send(self, request: WireRequest, timeout_s: float) -> WireReply:
        reply = self.inner.send(request, timeout_s)
        if self.edit is not None:
            reply = self.edit(request, reply)
        self.exchanges.append(Exchange(request, reply))
        return reply


@contextlib.contextmanager
def intercepted(server: Server, edit: Edit | None = None) -> Iterator[list[Exchange]]:
    """Every request the wallets and tills of this process send `server` inside the block, with
    the reply they read, in order; `edit` may change a reply on its way back. Only an
    in-process server's wire passes through this process."""
    assert isinstance(server, InProcessServer) and server.app is not None, "needs `server`"
    exchanges: list[Exchange] = []
    mount(server.url, _Intercepting(WsgiTransport(server.app), exchanges, edit))
    try:
        yield exchanges
    finally:
        mount(server.url, WsgiTransport(server.app))


def json_edit(method: str, path: str, change: Callable[[dict[str, Any]], None]) -> Edit:
    """An Edit that applies `change` to the JSON body of the replies to `method` `path`."""

    def edit(request: WireRequest, reply: WireReply) -> WireReply:
        parts = urllib.parse.urlsplit(request.url)
        if (request.method, parts.path) != (method, path):
            return reply
        body = json.loads(reply.body)
        change(body)
        return WireReply(reply.status, json.dumps(body).encode(), reply.date)

    return edit


def server_clock(monkeypatch: pytest.MonkeyPatch, offset_s: float) -> None:
    """The wallet API's clock (server.wallets.sessions.now_s, its seam for tests) runs
    `offset_s` from the real one, for the rest of the test: an in-process server only."""
    monkeypatch.setattr(sessions, "now_s", lambda: time.time() + offset_s)


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was just bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
