"""What tests of a server in this process need beyond the fixtures (tests/support/servers.py):

    opener(server)          a urllib opener for any Server: over real HTTP for a LiveServer,
                            through the app for an InProcessServer (its made-up URL has no
                            socket), with urllib's own cookies, redirects and HTTPError
    urlopen(server, ...)    one request through opener(server)
    reconfigure(...)        an InProcessServer's configuration changed for one test

Requests reach the app as the wallet's do (paycode.server.testing.WsgiTransport): a fresh
Flask test client call from 127.0.0.1, here with urllib's headers (its Cookie header included).
"""

from __future__ import annotations

import dataclasses
import email.message
import io
import urllib.parse
import urllib.request
import urllib.response
from http import HTTPStatus
from typing import Any

import pytest
from flask import Flask

from tests.support.servers import InProcessServer, Server

HTTP_TIMEOUT_S = 10.0


class _AppHandler(urllib.request.BaseHandler):
    """Opens http:// URLs of one in-process server's made-up host through its app."""

    handler_order = 100  # before urllib's HTTPHandler, which would look the host up

    def __init__(self, app: Flask, host: str, remote_addr: str = "127.0.0.1") -> None:
        self.app = app
        self.host = host
        self.remote_addr = remote_addr

    def http_open(self, request: urllib.request.Request) -> urllib.response.addinfourl | None:
        if request.host != self.host:
            return None  # another server: urllib's own handlers take it
        parts = urllib.parse.urlsplit(request.full_url)
        # use_cookies=False: the Cookie header is urllib's (its CookieJar), sent as it is
        response = self.app.test_client(use_cookies=False).open(
            parts.path,
            method=request.get_method(),
            query_string=parts.query,
            headers=dict(request.header_items()),
            data=request.data,
            environ_base={"REMOTE_ADDR": self.remote_addr},
        )
        headers = email.message.Message()
        for name, value in response.headers.items():
            headers[name] = value  # repeated headers (Set-Cookie) stay repeated
        body = io.BytesIO(response.get_data())
        reply = urllib.response.addinfourl(body, headers, request.full_url, response.status_code)
        reply.msg = HTTPStatus(response.status_code).phrase  # type: ignore[attr-defined]
        return reply


def opener(server: Server, *handlers: urllib.request.BaseHandler) -> urllib.request.OpenerDirector:
    """urllib.request.build_opener(*handlers) that reaches `server`, wherever it runs."""
    if isinstance(server, InProcessServer):
        assert server.app is not None, "the server was stopped"
        host = urllib.parse.urlsplit(server.url).netloc
        return urllib.request.build_opener(_AppHandler(server.app, host), *handlers)
    return urllib.request.build_opener(*handlers)


def urlopen(
    server: Server, request: urllib.request.Request | str, timeout_s: float = HTTP_TIMEOUT_S
) -> Any:
    """urllib.request.urlopen for `server` (see opener): raises HTTPError on an error answer."""
    return opener(server).open(request, timeout=timeout_s)


def reconfigure(monkeypatch: pytest.MonkeyPatch, server: Server, **changes: Any) -> None:
    """The in-process app's ServerConfig with `changes` (dataclasses.replace) for this test:
    requests read it per request, and monkeypatch puts the original back afterwards."""
    assert isinstance(server, InProcessServer) and server.app is not None, server
    config = server.app.config["PAYCODE"]
    monkeypatch.setitem(server.app.config, "PAYCODE", dataclasses.replace(config, **changes))
