"""A bounded pool of keep-alive HTTP/1.1 client connections on asyncio streams, for
bench/openloop.py: just enough HTTP to send pre-built requests and read their answers
(Content-Length or chunked bodies, `Connection: close` honoured)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

HEADER_BYTES_MAX = 64 * 1024
BODY_BYTES_MAX = 1024 * 1024
CHUNKS_MAX = 1024


class HttpError(Exception):
    """The server's answer could not be read as HTTP/1.1."""


@dataclass
class Reply:
    status: int
    body: bytes
    keep_alive: bool


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = False

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> Reply:
        self.used = True
        self.writer.write(request)
        await self.writer.drain()
        return await read_reply(self.reader)

    def close(self) -> None:
        self.writer.close()


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        raise HttpError("closed" if not error.partial else "truncated head") from None
    except asyncio.LimitOverrunError:
        raise HttpError("head too long") from None
    if len(head) > HEADER_BYTES_MAX:
        raise HttpError("head too long")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"bad status line {status_line[:60]!r}")
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    keep_alive = headers.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await read_chunked(reader)
    else:
        length = int(headers.get("content-length", "0") or 0)
        if not 0 <= length <= BODY_BYTES_MAX:
            raise HttpError("bad content-length")
        body = await reader.readexactly(length)
    return Reply(int(parts[1]), body, keep_alive)


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    for _ in range(CHUNKS_MAX):
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers expected
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)
        if len(body) > BODY_BYTES_MAX:
            break
    raise HttpError("chunked body too long")


class Pool:
    """At most `size` keep-alive connections, opened when first needed. A request waits here
    for a free one. A reused connection the server closed while idle (keep-alive timeout: no
    byte of an answer) is replaced once; the server never read that request."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port = host, port
        self.idle: asyncio.Queue[Connection | None] = asyncio.Queue()
        for _ in range(size):
            self.idle.put_nowait(None)
        self.opened = 0
        self.reopened = 0

    async def exchange(self, request: bytes) -> Reply:
        connection = await self.idle.get()
        try:
            for _attempt in range(2):
                if connection is None:
                    connection = await Connection.open(self.host, self.port)
                    self.opened += 1
                reused = connection.used
                try:
                    reply = await connection.exchange(request)
                except (HttpError, ConnectionError) as error:
                    connection.close()
                    connection = None
                    if not (reused and _never_answered(error)):
                        raise
                    self.reopened += 1
                    continue
                if not reply.keep_alive:
                    connection.close()
                    connection = None
                return reply
            raise HttpError("closed twice")
        except BaseException:
            if connection is not None:  # cancelled or failed mid-exchange: never reuse it
                connection.close()
                connection = None
            raise
        finally:
            self.idle.put_nowait(connection)

    def close(self) -> None:
        while not self.idle.empty():
            connection = self.idle.get_nowait()
            if connection is not None:
                connection.close()


def _never_answered(error: Exception) -> bool:
    return isinstance(error, ConnectionError) or str(error) == "closed"
