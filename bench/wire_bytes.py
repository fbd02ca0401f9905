"""Bytes on the wire of a browser's HTTP/1.x traffic (bench/bench_webwallet.py): a relay in
front of the server counts every request and answer each way, including the requests the
browser makes on its own (a service worker's update check) that Playwright does not list;
`Traffic` tells which requests the page, the service worker or the browser made."""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from typing import Any

SETTLE_S = 1.5
"""After a load: how long nothing may move (a request, a byte on the wire) before the load
counts as finished (the service worker installs and fetches its list after the page's load)."""
SETTLE_MAX_S = 20.0
RELAY_CHUNK_BYTES = 65536
UPDATE_CHECK_WAIT_S = 5.0


class HttpStream:
    """One direction of one HTTP/1.x connection, cut into messages by their headers and
    Content-Length: each message's start line and its bytes on the wire (headers and body)."""

    def __init__(self) -> None:
        self.head = b""
        self.body_left = 0
        self.messages: list[list[Any]] = []  # [start line, bytes]

    def feed(self, data: bytes) -> None:
        while data:
            if self.body_left:
                used = min(self.body_left, len(data))
                self.body_left -= used
                self.messages[-1][1] += used
                data = data[used:]
                continue
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[: end + 4], self.head[end + 4 :]
            self.head = b""
            lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            status = lines[0].split(" ")
            if len(status) > 1 and status[1] in ("204", "304"):
                length = 0
            self.messages.append([lines[0], len(head)])
            self.body_left = length


class CountingRelay:
    """A TCP relay in front of the server that counts the bytes each way: what crossed the
    wire (request and status lines, headers, bodies), including requests the browser makes on
    its own (the service worker's update check), which Playwright does not list."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.connections: list[tuple[HttpStream, HttpStream]] = []
        self.sockets: list[socket.socket] = []
        self.reported: set[tuple[int, int]] = set()  # (connection, exchange) taken already
        self.connections_taken = 0
        self.last_s = time.monotonic()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            up, down = HttpStream(), HttpStream()
            with self.lock:
                self.connections.append((up, down))
                self.sockets += [client, server]
                self.last_s = time.monotonic()
            threading.Thread(target=self._pipe, args=(client, server, up), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, down), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, stream: HttpStream) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(RELAY_CHUNK_BYTES):
                sink.sendall(data)
                with self.lock:
                    stream.feed(data)
                    self.last_s = time.monotonic()
            sink.shutdown(socket.SHUT_WR)

    def take(self) -> dict[str, Any]:
        """The exchanges not reported yet: per request its path, status and bytes each way
        (HTTP/1.x answers in order on a connection), their totals, connections opened."""
        rows = []
        with self.lock:
            for number, (up, down) in enumerate(self.connections):
                pairs = itertools.zip_longest(up.messages, down.messages)
                for index, (request, response) in enumerate(pairs):
                    if (number, index) in self.reported:
                        continue
                    self.reported.add((number, index))
                    status = response[0].split(" ")[1] if response else ""
                    rows.append(
                        {
                            "path": request[0].split(" ")[1] if request else "?",
                            "status": int(status) if status.isdigit() else None,
                            "down": response[1] if response else 0,
                            "up": request[1] if request else 0,
                        }
                    )
            opened = len(self.connections) - self.connections_taken
            self.connections_taken = len(self.connections)
        return {
            "requests": rows,
            "down": sum(row["down"] for row in rows),
            "up": sum(row["up"] for row in rows),
            "connections": opened,
        }

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for one in self.sockets:
                with contextlib.suppress(OSError):
                    one.close()


class Traffic:
    """Every finished or failed request of a browser context, page and service worker alike,
    as Playwright reports them; the relay's wire bytes are the figures."""

    def __init__(self, context: Any, relay: CountingRelay) -> None:
        self.requests: list[Any] = []
        self.relay = relay
        self.last_s = time.monotonic()
        context.on("request", self._seen)
        context.on("requestfinished", self._done)
        context.on("requestfailed", self._done)

    def _seen(self, request: Any) -> None:
        self.last_s = time.monotonic()

    def _done(self, request: Any) -> None:
        self.requests.append(request)
        self.last_s = time.monotonic()

    def settle(self, page: Any, since_s: float) -> None:
        """Wait until nothing moved (browser requests, wire bytes) for SETTLE_S, and at least
        UPDATE_CHECK_WAIT_S after `since_s` (bounded by SETTLE_MAX_S)."""
        deadline = since_s + SETTLE_MAX_S
        while time.monotonic() < deadline:
            now = time.monotonic()
            quiet = now - max(self.last_s, self.relay.last_s) >= SETTLE_S
            if quiet and now - since_s >= UPDATE_CHECK_WAIT_S:
                return
            page.wait_for_timeout(200)

    def take(self, origin: str) -> dict[str, Any]:
        """The wire's exchanges since the last take, each with who asked for it (the page, the
        service worker installing, or the browser itself, unlisted by Playwright: the worker's
        update check); requests the service worker answered from its cache are counted."""
        requests, self.requests = self.requests, []
        asked: dict[str, list[str]] = {}
        from_cache = 0
        for request in requests:
            response = request.response()
            if response is not None and response.from_service_worker:
                from_cache += 1
                continue
            path = request.url.removeprefix(origin)
            asked.setdefault(path, []).append(
                "service worker" if request.service_worker else "page"
            )
        wire = self.relay.take()
        for row in wire["requests"]:
            row["by"] = asked[row["path"]].pop(0) if asked.get(row["path"]) else "browser"
        app = [row for row in wire["requests"] if row["path"].startswith("/wallet/")]
        return {
            "requests": wire["requests"],
            "network_requests": len(wire["requests"]),
            "app_requests": len(app),
            "app_down_bytes": sum(row["down"] for row in app),
            "down_bytes": wire["down"],
            "up_bytes": wire["up"],
            "connections": wire["connections"],
            "from_service_worker": from_cache,
        }
