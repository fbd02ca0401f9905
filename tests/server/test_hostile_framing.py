"""NUL in a path, a query or a header is a 400 invalid_request before any handler runs
(app.nul_in_request reads the WSGI environ's raw strings); everything else passes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from paycode.server.app import create_app, nul_in_request
from tests.support.configs import sqlite_test_config


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    config = sqlite_test_config(tmp_path)
    application = create_app(config)
    yield application
    application.extensions["paycode_engine"].dispose()


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/healthz", {"X-Anything": "a\x00b"}),
        ("/healthz", {"Paycode-Signature": "\x00"}),
        ("/healthz", {"Content-Type": "application/json\x00"}),
        ("/healthz?x=%00", {}),
        ("/healthz%00", {}),
        ("/v1/payments/pay_%00", {}),
    ],
)
def test_nul_anywhere_in_the_framing_is_invalid_request(
    app: Flask, path: str, headers: dict[str, str]
) -> None:
    reply = app.test_client().get(path, headers=headers)
    assert reply.status_code == 400
    assert reply.get_json()["code"] == "invalid_request"


def test_requests_without_nul_pass(app: Flask) -> None:
    client = app.test_client()
    headers = {"X-Anything": "caf\u00e9 %00 \\x00", "Content-Type": "text/plain"}
    assert client.get("/healthz?x=%2500&y=0", headers=headers).status_code == 200


def test_the_raw_scan_agrees_with_the_decoded_headers() -> None:
    base = {"PATH_INFO": "/v1/charges", "QUERY_STRING": "a=1", "wsgi.input": object()}
    assert not nul_in_request(base | {"HTTP_X_A": "b", "CONTENT_LENGTH": "2"})
    assert nul_in_request(base | {"HTTP_X_A": "b\x00"})
    assert nul_in_request(base | {"CONTENT_LENGTH": "\x002"})
    assert nul_in_request(base | {"QUERY_STRING": "a=%00"})
    assert not nul_in_request(base | {"SERVER_SOFTWARE": "x\x00"})  # not a header
