"""Unauthenticated requests with hostile header and form values, over real HTTP (issue 19,
item 7): a non-ASCII digit that `str.isdigit()` accepts and `int()` refuses, a non-ASCII
string that `hmac.compare_digest` refuses, NUL that PostgreSQL refuses in a string. Each is
bad input: a typed 4xx problem (or the dashboard's own page), never a 500 with a traceback.
"""

from __future__ import annotations

import email.message
import http.client
import io
import json
import os
import time
import urllib.error
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

from paycode.appkit import http_client
from paycode.server import cli, config
from paycode.server.commands.common import CliError
from paycode.server.config import ServerConfig
from paycode.server.operations import observability
from paycode.shared.errors import ConfigError
from tests.support.servers import Server

HTTP_TIMEOUT_S = 10.0
SUPERSCRIPT_TWO = "\u00b2"  # "²": isdigit() is True, int() raises ValueError
ARABIC_INDIC_FIVE = "\u0665"  # Arabic-Indic five: isdigit() and int() both take it; not ASCII


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes

    def problem_code(self) -> str | None:
        if not self.content_type.startswith("application/problem+json"):
            return None
        return str(json.loads(self.body).get("code"))


def send(
    server: Server, method: str, path: str, headers: dict[str, bytes], body: bytes = b""
) -> Reply:
    """One request with header values sent as raw bytes (urllib would re-encode them)."""
    parts = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=HTTP_TIMEOUT_S)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        answer = connection.getresponse()
        return Reply(answer.status, answer.getheader("Content-Type", ""), answer.read())
    finally:
        connection.close()


def signed_headers(id_header: str, timestamp: str) -> dict[str, bytes]:
    return {
        id_header: b"k" * 20,
        "Paycode-Timestamp": timestamp.encode(),
        "Paycode-Nonce": b"n" * 24,
        "Paycode-Signature": b"c2lnbmF0dXJl",
        "Content-Type": b"application/json",
        "Idempotency-Key": b"idem-key-0000000001",
    }


def assert_refused_as_bad_input(reply: Reply, *codes: str) -> None:
    assert 400 <= reply.status < 500, (reply.status, reply.body[:300])
    assert b"Traceback" not in reply.body
    if codes:
        assert reply.problem_code() in codes, reply.body[:300]


SIGNED_CALLS = [
    pytest.param("POST", "/v1/charges", "Paycode-Key-Id", id="terminal-charge"),
    pytest.param("GET", "/v1/wallet/pending", "Paycode-Device", id="wallet-pending"),
    pytest.param("POST", "/v1/wallet/payments/p-1/confirm", "Paycode-Device", id="confirm"),
]


@pytest.mark.parametrize(("method", "path", "id_header"), SIGNED_CALLS)
@pytest.mark.parametrize("digits", [SUPERSCRIPT_TWO, "1" + ARABIC_INDIC_FIVE, "\uff11"])
def test_a_timestamp_of_non_ascii_digits_is_refused_not_a_500(
    live_server: Server, method: str, path: str, id_header: str, digits: str
) -> None:
    """Before the fix: `Paycode-Timestamp: ²` passed isdigit() and int() raised: a 500."""
    headers = signed_headers(id_header, digits)
    headers["Paycode-Timestamp"] = digits.encode("utf-8")
    body = b'{"pin": "135790"}' if path.endswith("confirm") else b"{}"
    assert_refused_as_bad_input(send(live_server, method, path, headers, body), "unauthorized")
    headers["Paycode-Timestamp"] = digits.encode("latin-1", "ignore") or b"\xb2"
    assert_refused_as_bad_input(send(live_server, method, path, headers, body), "unauthorized")


def test_a_non_ascii_csrf_field_at_logout_is_refused_not_a_500(live_server: Server) -> None:
    """Before the fix: hmac.compare_digest raised TypeError on a non-ASCII str: a 500."""
    form = urllib.parse.urlencode({"csrf": "\u00e9" * 64}).encode()
    headers = {
        "Content-Type": b"application/x-www-form-urlencoded",
        "Cookie": b"paycode_dashboard=anything-at-all",
    }
    for cookie in (b"anything-at-all", b"caf\xc3\xa9", b"\xe9t\xe9"):
        headers["Cookie"] = b"paycode_dashboard=" + cookie
        reply = send(live_server, "POST", "/dashboard/logout", headers, form)
        assert reply.status in (302, 303), (reply.status, reply.body[:300])


NUL_AND_FRIENDS = ["\x00", "a\x00b", "\ud800", "\u00e9\u00e9", "x" * 5000]


@pytest.mark.parametrize("value", NUL_AND_FRIENDS, ids=["nul", "inner-nul", "surrogate",
                                                        "latin", "overlong"])  # fmt: skip
def test_wallet_log_in_with_a_nul_or_odd_user_name_is_refused_not_a_500(
    live_server: Server, value: str
) -> None:
    """PostgreSQL refuses NUL in a string: the name must be refused before it is looked up."""
    for field in ("user", "password"):
        body = {"user": "someone", "password": "a guess"} | {field: value}
        reply = send(
            live_server,
            "POST",
            "/v1/wallet/sessions",
            {"Content-Type": b"application/json"},
            json.dumps(body).encode(),
        )
        assert_refused_as_bad_input(reply)


@pytest.mark.parametrize("value", NUL_AND_FRIENDS, ids=["nul", "inner-nul", "surrogate",
                                                        "latin", "overlong"])  # fmt: skip
def test_dashboard_log_in_with_a_nul_or_odd_name_is_refused_not_a_500(
    live_server: Server, value: str
) -> None:
    for field in ("name", "password"):
        form = {"name": "Some Shop", "password": "a guess"} | {field: value}
        body = urllib.parse.urlencode(form, errors="surrogatepass").encode()
        headers = {"Content-Type": b"application/x-www-form-urlencoded"}
        reply = send(live_server, "POST", "/dashboard/login", headers, body)
        assert 400 <= reply.status < 500, (field, reply.status, reply.body[:300])
        assert b"Traceback" not in reply.body


@pytest.mark.parametrize("id_header", ["Paycode-Key-Id", "Paycode-Device"])
@pytest.mark.parametrize("raw", [b"\xc3\xa9" * 10, b"\xff\xfe" * 10, b"x" * 9000])
def test_a_non_ascii_or_overlong_key_id_is_refused_not_a_500(
    live_server: Server, id_header: str, raw: bytes
) -> None:
    path = "/v1/charges" if id_header == "Paycode-Key-Id" else "/v1/wallet/pending"
    method = "POST" if id_header == "Paycode-Key-Id" else "GET"
    for header in (id_header, "Paycode-Nonce", "Paycode-Signature"):
        headers = signed_headers(id_header, str(int(time.time())))
        headers[header] = raw
        reply = send(live_server, method, path, headers, b"{}")
        assert 400 <= reply.status < 500 or reply.status == 431, (header, reply.status)
        assert b"Traceback" not in reply.body


# -- the same class of bug outside requests: settings, arguments, a reply's headers ------------


def test_proxy_hops_of_superscript_digits_is_a_config_error_not_a_crash() -> None:
    with pytest.raises(ConfigError):
        ServerConfig.from_env({config.PROXY_HOPS_ENV: SUPERSCRIPT_TWO})


def test_a_bind_port_of_superscript_digits_is_refused_not_a_crash() -> None:
    with pytest.raises(CliError):
        cli._parse_bind(f"127.0.0.1:8{SUPERSCRIPT_TWO}")


def test_a_content_length_of_superscript_digits_in_a_problem_is_not_a_crash() -> None:
    """The client read Content-Length with isdigit() and int(): a hostile server's "²" crashed
    it with ValueError instead of a typed answer."""
    headers = email.message.Message()
    headers["Content-Length"] = SUPERSCRIPT_TWO
    error = urllib.error.HTTPError("http://x/", 422, "no", headers, io.BytesIO(b'{"code": "x"}'))
    assert http_client._problem_bytes(error, "http://x") == b'{"code": "x"}'


def test_a_stale_metrics_folder_named_in_superscript_digits_is_removed_not_a_crash(
    tmp_path: Path,
) -> None:
    stale = tmp_path / observability.MULTIPROC_PARENT / SUPERSCRIPT_TWO
    stale.mkdir(parents=True)
    observability.prepare_multiprocess_dir(tmp_path, pid=os.getpid())
    assert not stale.exists()
