"""A fault-injecting HTTP/1.1 proxy on loopback: it sits between a real client and a live server
and does to each connection what a script says (tests/reliability/test_network_faults.py).

    with FaultProxy(("127.0.0.1", port)) as proxy:
        first = proxy.accepted
        proxy.script([Step(Fault.DROP_RESPONSE), Step(Fault.PASS)])
        client = TerminalClient(proxy.url, ...)
        ...
        proxy.wait_settled(first)   # no request of these can still reach the server

Every accepted connection takes the next Step of the script, in accept order (PASS once the
script is used up), so a sequential client meets a fixed, replayable series of faults: the
proxy has no randomness of its own; a seeded plan is made by the test. One connection carries
one request (the standard library's client sends `Connection: close`, and the server's sync
workers close after each answer). The proxy reads the whole request, then:

    PASS            forwards it and the whole response
    DROP_REQUEST    closes the client's connection; the server never sees the request
    DROP_RESPONSE   forwards it, reads the server's whole answer (the work is done), then closes
                    the client's connection without a byte of it
    CUT_RESPONSE    the same, but sends a prefix of the answer first (cut inside the status
                    line, the headers or the body), then closes (FIN)
    RESET_RESPONSE  as CUT_RESPONSE, then resets the connection (RST)
    DELAY_RESPONSE  forwards it, holds the whole answer for `delay_s`, then sends it (if the
                    client still listens)
    DELAY_REQUEST   holds the request for `delay_s`, then forwards it anyway (a request stuck
                    in a queue that the server still runs after the client gave up), and
                    sends the answer back if the client still listens

Everything is bounded: request and response sizes, every socket operation's timeout, the number
of connections handled at once, the records kept, and each delay (a stop ends it early).
"""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType

HEADER_BYTES_MAX = 16 * 1024
BODY_BYTES_MAX = 256 * 1024
"""The server refuses bodies over 64 KiB; a client sending more here is a broken test."""
RESPONSE_BYTES_MAX = 2 * 1024 * 1024
IO_TIMEOUT_S = 30.0
"""Any one socket operation; the server answers a charge in well under a second."""
DELAY_S_MAX = 30.0
HANDLERS_MAX = 32
RECORDS_MAX = 10_000
ACCEPT_POLL_S = 0.05
CHUNK_BYTES = 64 * 1024
BACKLOG = 64


class Fault(enum.StrEnum):
    PASS = "pass"
    DROP_REQUEST = "drop_request"
    DROP_RESPONSE = "drop_response"
    CUT_RESPONSE = "cut_response"
    RESET_RESPONSE = "reset_response"
    DELAY_RESPONSE = "delay_response"
    DELAY_REQUEST = "delay_request"


class Region(enum.StrEnum):
    """Where CUT_RESPONSE and RESET_RESPONSE cut the answer."""

    STATUS = "status"
    HEADERS = "headers"
    BODY = "body"


@dataclass(frozen=True)
class Step:
    """What to do to one connection."""

    fault: Fault = Fault.PASS
    delay_s: float = 0.0
    region: Region = Region.BODY
    at: float = 0.5
    """Where in `region` the cut falls, as a fraction of it (0 <= at < 1)."""
    label: str = ""
    """The test's name for this step (e.g. "delay_beyond"); defaults to the fault's."""

    def __post_init__(self) -> None:
        assert 0.0 <= self.delay_s <= DELAY_S_MAX, self.delay_s
        assert 0.0 <= self.at < 1.0, self.at

    @property
    def name(self) -> str:
        return self.label or str(self.fault)


@dataclass
class Record:
    """What happened to one connection."""

    index: int
    step: Step
    request_bytes: int = 0
    forwarded: bool = False
    """The whole request reached the server."""
    answered: int | None = None
    """The server's status code, once its whole answer was read."""
    sent_bytes: int = 0
    """Bytes of the answer that went back to the client."""
    error: str = ""
    finished: bool = False

    @property
    def settled(self) -> bool:
        """Nothing more of this request can reach the server: it answered, or never will."""
        return self.finished or self.answered is not None


class Incomplete(Exception):
    """A peer closed (or went silent) before a whole HTTP message arrived."""


@dataclass
class FaultProxy:
    upstream: tuple[str, int]
    io_timeout_s: float = IO_TIMEOUT_S
    handlers_max: int = HANDLERS_MAX
    records: list[Record] = field(default_factory=list)
    _listener: socket.socket | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _script: deque[Step] = field(default_factory=deque, repr=False)
    _accepted: int = 0
    _active: int = 0
    _lock: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)
    _slots: threading.BoundedSemaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        assert 1 <= self.handlers_max <= HANDLERS_MAX
        self._slots = threading.BoundedSemaphore(self.handlers_max)

    # -- life ------------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(BACKLOG)
        listener.settimeout(ACCEPT_POLL_S)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, end held delays early, and wait (bounded) for the handlers."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.io_timeout_s)
        if self._listener is not None:
            self._listener.close()
        self.wait_idle(self.io_timeout_s)

    @property
    def url(self) -> str:
        assert self._listener is not None, "start() first"
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    # -- the test's side -------------------------------------------------------------------

    def script(self, steps: Iterable[Step]) -> None:
        """The steps for the next connections, in order; PASS after them."""
        with self._lock:
            self._script = deque(steps)

    def wait_settled(self, first: int, timeout_s: float = IO_TIMEOUT_S + DELAY_S_MAX) -> bool:
        """Wait until every connection from index `first` on is settled: the server has
        answered it or never will see it (an answer still held back does not count)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not all(r.settled for r in self.records if r.index >= first):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def wait_idle(self, timeout_s: float = IO_TIMEOUT_S + DELAY_S_MAX) -> bool:
        """Wait until no connection is being handled (held delays included)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    @property
    def accepted(self) -> int:
        with self._lock:
            return self._accepted

    def records_since(self, index: int) -> list[Record]:
        with self._lock:
            return [record for record in self.records if record.index >= index]

    # -- the proxy's side ------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            if not self._slots.acquire(timeout=ACCEPT_POLL_S):
                continue
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                self._slots.release()
                continue
            except OSError:
                self._slots.release()
                return
            with self._lock:
                step = self._script.popleft() if self._script else Step()
                record = Record(self._accepted, step)
                self._accepted += 1
                self._active += 1
                if len(self.records) < RECORDS_MAX:
                    self.records.append(record)
            threading.Thread(
                target=self._handle, args=(client, record), name="faultproxy-conn", daemon=True
            ).start()

    def _handle(self, client: socket.socket, record: Record) -> None:
        reset = False
        try:
            client.settimeout(self.io_timeout_s)
            reset = self._serve(client, record)
        except (OSError, ValueError, Incomplete) as error:  # ValueError: a bad Content-Length
            record.error = f"{type(error).__name__}: {error}"[:200]
        finally:
            if reset:
                with contextlib.suppress(OSError):
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                client.close()
            self._slots.release()
            with self._lock:
                record.finished = True
                self._active -= 1
                self._lock.notify_all()

    def _serve(self, client: socket.socket, record: Record) -> bool:
        """Carry out the record's step; True: end the client's connection with a reset."""
        step = record.step
        request = read_message(client, BODY_BYTES_MAX)
        record.request_bytes = len(request)
        if step.fault == Fault.DROP_REQUEST:
            return False
        if step.fault == Fault.DELAY_REQUEST and self._stopping.wait(step.delay_s):
            return False
        response = self._exchange(request, record)
        if step.fault == Fault.DROP_RESPONSE:
            return False
        if step.fault in (Fault.CUT_RESPONSE, Fault.RESET_RESPONSE):
            prefix = response[: cut_offset(response, step.region, step.at)]
            client.sendall(prefix)
            record.sent_bytes = len(prefix)
            return step.fault == Fault.RESET_RESPONSE
        if step.fault == Fault.DELAY_RESPONSE and self._stopping.wait(step.delay_s):
            return False
        client.sendall(response)
        record.sent_bytes = len(response)
        return False

    def _exchange(self, request: bytes, record: Record) -> bytes:
        """Send the request to the server and read its whole answer."""
        with socket.create_connection(self.upstream, timeout=self.io_timeout_s) as upstream:
            upstream.sendall(request)
            record.forwarded = True
            response = read_message(upstream, RESPONSE_BYTES_MAX, until_close=True)
        with self._lock:
            record.answered = status_of(response) or 0
            self._lock.notify_all()
        return response


# -- HTTP framing (just enough for one request or one answer) -------------------------------


def read_message(sock: socket.socket, body_max: int, *, until_close: bool = False) -> bytes:
    """One HTTP/1.1 message: headers to the blank line, then Content-Length bytes (or, for an
    answer without one, everything until the peer closes). Raises Incomplete if cut short."""
    data = bytearray()
    while b"\r\n\r\n" not in data:
        if len(data) > HEADER_BYTES_MAX:
            raise Incomplete("headers too long")
        chunk = sock.recv(CHUNK_BYTES)
        if not chunk:
            raise Incomplete(f"closed after {len(data)} header bytes")
        data += chunk
    head_end = data.index(b"\r\n\r\n") + 4
    length = content_length(bytes(data[:head_end]))
    if length is None and not until_close:
        length = 0
    if length is not None and length > body_max:
        raise Incomplete(f"body of {length} bytes is over {body_max}")
    limit = head_end + (length if length is not None else body_max)
    while len(data) < limit:
        chunk = sock.recv(min(CHUNK_BYTES, limit - len(data)))
        if not chunk:
            if length is None:
                break
            raise Incomplete(f"closed after {len(data) - head_end} of {length} body bytes")
        data += chunk
    return bytes(data[:limit])


def content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


def status_of(response: bytes) -> int | None:
    parts = response.split(b"\r\n", 1)[0].split(b" ", 2)
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


def cut_offset(response: bytes, region: Region, at: float) -> int:
    """A byte offset strictly inside `region` of the answer: the prefix sent before the cut."""
    status_end = response.index(b"\r\n")
    head_end = response.index(b"\r\n\r\n") + 4
    low, high = {
        Region.STATUS: (1, status_end),
        Region.HEADERS: (status_end + 2, head_end - 2),
        Region.BODY: (head_end, len(response)),
    }[region]
    if high <= low:  # an empty body: cut in the headers instead
        low, high = status_end + 2, head_end - 2
    return min(high - 1, low + int(at * (high - low)))


@contextlib.contextmanager
def fault_proxy(upstream_url: str) -> Iterator[FaultProxy]:
    """A proxy in front of `upstream_url` (http://host:port)."""
    host, _, port = upstream_url.removeprefix("http://").partition(":")
    with FaultProxy((host, int(port))) as proxy:
        yield proxy
