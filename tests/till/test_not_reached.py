"""A refused connection is the one network failure that proves the server saw nothing
(issue 20): the HTTP client calls it ServerNotReached, and the till's client only when no
attempt of a call can have reached the server. A reply cut after the request was sent stays a
plain ServerUnreachable: the server may have acted on it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from paycode.appkit import http_client
from paycode.appkit.http_client import ServerClient, WireReply, WireRequest
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.shared.errors import ServerNotReached, ServerUnreachable
from tests.support.servers import free_port

FAKE_URL = "http://till-not-reached.test"


@pytest.fixture
def hangs_up() -> Iterator[str]:
    """A server that reads the request, then closes without a byte of answer."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def serve() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with connection:
            connection.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    thread.join(timeout=5)
    listener.close()


def test_a_refused_connection_is_server_not_reached() -> None:
    client = ServerClient(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(ServerNotReached):
        client.call("GET", "/v1/merchant")


def test_a_reply_cut_after_the_request_was_sent_is_not_called_not_reached(hangs_up: str) -> None:
    with pytest.raises(ServerUnreachable) as raised:
        ServerClient(hangs_up, timeout_s=2).call("POST", "/v1/charges", {"code": "x"})
    assert not isinstance(raised.value, ServerNotReached)


class Scripted:
    """A transport that fails each call as `failures` says, in order."""

    def __init__(self, failures: list[ServerUnreachable]) -> None:
        self.failures = failures

    def send(self, request: WireRequest, timeout_s: float) -> WireReply:
        raise self.failures.pop(0)


@pytest.mark.parametrize(
    ("first", "not_reached"),
    [(ServerNotReached("refused"), True), (ServerUnreachable("reply cut"), False)],
    ids=["refused_every_time", "cut_then_refused"],
)
def test_a_charge_that_may_have_reached_the_server_once_is_never_called_not_reached(
    first: ServerUnreachable, not_reached: bool
) -> None:
    """Attempt 1 cut after sending, then the server went down (refused): the first attempt
    may have charged, so the till must not conclude "nothing was charged"."""
    refused = [ServerNotReached("refused") for _ in range(3)]
    http_client.mount(FAKE_URL, Scripted([first, *refused]))
    try:
        till = TerminalClient(FAKE_URL, "term_x", b"k" * 32, sleep=lambda _s: None)
        with pytest.raises(ServerUnreachable) as raised:
            till.charge(code="c", amount="1.00", currency="CNY", idempotency_key="k")
    finally:
        http_client.unmount(FAKE_URL)
    assert isinstance(raised.value, ServerNotReached) is not_reached
