"""A v3 device's key at enrollment, over HTTP on both databases (issue 19, items 6 and 15).

A small-order Ed25519 public key lets one fixed signature verify every message: a device
enrolled with one would sign every code (tests/support/weak_keys.py lists them all). And a
key enrolls only with a proof of possession: the new key's signature over the version, the
key, the session (or the rotating device) and the request's Idempotency-Key (spec §6.1)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.appkit.http_client import ServerClient
from paycode.client import online
from paycode.shared.enrollment import b64, new_ed25519_seed
from paycode.shared.key_proof import ProofScope, device_scope, make_proof, session_scope
from tests.support.servers import Server
from tests.support.shop import PASSWORD, new_phone, new_user, refused
from tests.support.weak_keys import P, small_order_keys


def _session(server: Server, client: ServerClient) -> str:
    user = new_user(server, "keys")
    reply = client.call("POST", "/v1/wallet/sessions", {"user": user, "password": PASSWORD})
    token = reply.body["token"]
    assert isinstance(token, str)
    return token


def _enroll_v3(
    client: ServerClient, token: str, body: dict[str, Any], *, key: str = ""
) -> dict[str, Any]:
    reply = client.call(
        "POST",
        "/v1/wallet/devices",
        {"version": "v3", "label": "keys test"} | body,
        bearer=token,
        idempotency_key=key or str(uuid.uuid4()),
    )
    return reply.body


def _proven(seed: bytes, scope: ProofScope) -> dict[str, Any]:
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    return {"public_key": b64(public), "proof": make_proof(seed, "v3", scope)}


def test_every_small_order_ed25519_key_is_refused_at_enrollment(server: Server) -> None:
    client = ServerClient(server.url)
    token = _session(server, client)
    for key in small_order_keys():
        error = refused("weak_key", _enroll_v3, client, token, {"public_key": b64(key)})
        assert error.status == 400, key.hex()
    key = str(uuid.uuid4())
    body = _proven(new_ed25519_seed()[0], session_scope(token, key))
    assert _enroll_v3(client, token, body, key=key)["version"] == "v3"


@pytest.mark.parametrize("y", [P + 2, 2**255 - 1])
def test_a_non_canonical_ed25519_key_is_refused_at_enrollment(server: Server, y: int) -> None:
    """y >= p: not one of the torsion points above, still a second spelling of y - p."""
    client = ServerClient(server.url)
    raw = y.to_bytes(32, "little")
    refused("weak_key", _enroll_v3, client, _session(server, client), {"public_key": b64(raw)})


def test_a_key_whose_proof_was_made_by_another_key_is_refused(server: Server) -> None:
    client = ServerClient(server.url)
    token, key = _session(server, client), str(uuid.uuid4())
    scope = session_scope(token, key)
    victim_seed, attacker_seed = new_ed25519_seed()[0], new_ed25519_seed()[0]
    claimed = _proven(victim_seed, scope)["public_key"]
    forged = {"public_key": claimed, "proof": _proven(attacker_seed, scope)["proof"]}
    error = refused("key_proof_invalid", _enroll_v3, client, token, forged, key=key)
    assert error.status == 400
    # The refusal stored nothing under the key: the genuine request with it enrolls.
    assert _enroll_v3(client, token, _proven(victim_seed, scope), key=key)["version"] == "v3"


def test_a_missing_or_replayed_proof_is_refused(server: Server) -> None:
    """No proof; a proof for another request (another Idempotency-Key) of this session; a proof
    made for another session: each is refused, so a proof seen once cannot enroll a key again."""
    client = ServerClient(server.url)
    token, other_token = _session(server, client), _session(server, client)
    seed, key = new_ed25519_seed()[0], str(uuid.uuid4())
    body = _proven(seed, session_scope(token, key))
    refused("key_proof_invalid", _enroll_v3, client, token, {"public_key": body["public_key"]})
    refused("key_proof_invalid", _enroll_v3, client, token, body, key=str(uuid.uuid4()))
    refused("key_proof_invalid", _enroll_v3, client, other_token, body, key=key)
    wrong_version = body | {"proof": make_proof(seed, "v2", session_scope(token, key))}
    refused("key_proof_invalid", _enroll_v3, client, token, wrong_version, key=key)
    refused("invalid_request", _enroll_v3, client, token, {"version": "v2", "proof": "AA=="})


def test_a_rotation_proof_bound_to_another_device_is_refused(
    server: Server, tmp_path: Path
) -> None:
    phone = new_phone(server, tmp_path / "phone", new_user(server), ["v3"])
    old = phone.enrollment("v3")
    seed, key = new_ed25519_seed()[0], str(uuid.uuid4())
    elsewhere = _proven(seed, device_scope("dev_someone_else", key))
    refused(
        "key_proof_invalid",
        online.signed_call,
        phone,
        "POST",
        "/v1/wallet/devices/rotate",
        {"version": "v3"} | elsewhere,
        enrollment=old,
        idempotency_key=key,
    )
    key = str(uuid.uuid4())  # a refused rotation keeps its answer under its key
    body = {"version": "v3"} | _proven(seed, device_scope(old.device_id, key))
    reply = online.signed_call(
        phone, "POST", "/v1/wallet/devices/rotate", body, enrollment=old, idempotency_key=key
    )
    assert reply.body["revoked_device_id"] == old.device_id
