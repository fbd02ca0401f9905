"""PAYCODE_PROXY_HOPS over real HTTP: behind N trusted proxies the client address comes from
the right end of X-Forwarded-For (the terminal allow-list, the guard's ip: scope and the log see
the client); without the setting the header is ignored, so a client cannot choose its address."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from paycode.server.config import ServerConfig
from paycode.shared import terminal_auth
from paycode.shared.errors import ConfigError
from tests.support.servers import LiveServer, get_json, start_server

ALLOWED_NET = "203.0.113.0/24"
INSIDE = "203.0.113.7"
OUTSIDE = "198.51.100.1"


def till_of(server: LiveServer, merchant: str) -> tuple[str, bytes]:
    """A terminal of a new merchant whose terminals may call only from ALLOWED_NET."""
    made = server.cli_in_process("merchants", "create", merchant, "--allow-ip", ALLOWED_NET)
    assert made.returncode == 0, made.stderr
    created = server.cli_in_process("--json", "terminals", "create", merchant)
    assert created.returncode == 0, created.stderr
    reply = json.loads(created.stdout)
    return reply["key_id"], base64.b64decode(reply["secret"])


def merchant_call(
    server: LiveServer, till: tuple[str, bytes], forwarded_for: str | None
) -> tuple[int, dict[str, Any]]:
    """A signed GET /v1/merchant, as if through a proxy that sent `forwarded_for`."""
    key_id, secret = till
    headers = terminal_auth.sign_headers(
        key_id, secret, "GET", "/v1/merchant", b"", timestamp_s=int(time.time())
    )
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    status, _, body = get_json(f"{server.url}/v1/merchant", headers)
    return status, body


def test_behind_one_proxy_the_allow_list_sees_the_client() -> None:
    with start_server("sqlite", extra_env={"PAYCODE_PROXY_HOPS": "1"}) as server:
        till = till_of(server, "Proxied Shop")
        status, body = merchant_call(server, till, INSIDE)
        assert (status, body["name"]) == (200, "Proxied Shop")
        # A client's own X-Forwarded-For comes first; the proxy appends the real peer.
        for forwarded in (f"{INSIDE}, {OUTSIDE}", OUTSIDE, None):
            status, body = merchant_call(server, till, forwarded)
            assert (status, body["code"]) == (403, "forbidden"), forwarded
        logged = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        addresses = {row.get("client_addr") for row in logged if row.get("route")}
        assert INSIDE in addresses and OUTSIDE in addresses


def test_without_the_setting_the_header_is_ignored(live_sqlite: LiveServer) -> None:
    till = till_of(live_sqlite, "Direct Shop")
    status, body = merchant_call(live_sqlite, till, INSIDE)
    assert (status, body["code"]) == (403, "forbidden")


@pytest.mark.parametrize("raw", ["-1", "one", "9", "1.5"])
def test_a_bad_setting_stops_the_start(raw: str, tmp_path: Any) -> None:
    env = {"PAYCODE_INSTANCE": str(tmp_path), "PAYCODE_PROXY_HOPS": raw}
    with pytest.raises(ConfigError, match="PAYCODE_PROXY_HOPS"):
        ServerConfig.from_env(env)
