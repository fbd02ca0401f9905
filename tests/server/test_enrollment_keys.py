"""Weak device keys at v3 enrollment (issue 19, item 6), over HTTP on both databases.

A small-order Ed25519 public key lets one fixed signature verify every message: a device
enrolled with one would sign every code (tests/support/weak_keys.py lists them all)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from paycode.appkit.http_client import ServerClient
from paycode.shared.enrollment import b64, new_ed25519_seed
from tests.support.servers import Server
from tests.support.shop import PASSWORD, new_user, refused
from tests.support.weak_keys import P, small_order_keys


def _session(server: Server, client: ServerClient) -> str:
    user = new_user(server, "keys")
    reply = client.call("POST", "/v1/wallet/sessions", {"user": user, "password": PASSWORD})
    token = reply.body["token"]
    assert isinstance(token, str)
    return token


def _enroll_v3(client: ServerClient, token: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = client.call(
        "POST",
        "/v1/wallet/devices",
        {"version": "v3", "label": "keys test"} | body,
        bearer=token,
        idempotency_key=str(uuid.uuid4()),
    )
    return reply.body


def test_every_small_order_ed25519_key_is_refused_at_enrollment(server: Server) -> None:
    client = ServerClient(server.url)
    token = _session(server, client)
    for key in small_order_keys():
        error = refused("weak_key", _enroll_v3, client, token, {"public_key": b64(key)})
        assert error.status == 400, key.hex()
    _, good = new_ed25519_seed()
    assert _enroll_v3(client, token, {"public_key": b64(good)})["version"] == "v3"


@pytest.mark.parametrize("y", [P + 2, 2**255 - 1])
def test_a_non_canonical_ed25519_key_is_refused_at_enrollment(server: Server, y: int) -> None:
    """y >= p: not one of the torsion points above, still a second spelling of y - p."""
    client = ServerClient(server.url)
    raw = y.to_bytes(32, "little")
    refused("weak_key", _enroll_v3, client, _session(server, client), {"public_key": b64(raw)})
