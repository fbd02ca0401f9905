"""The server's wallet API (server/blueprints/wallet.py) against the contract in docs/api.md.

Requests are signed by the real wallet code (`paycode.client.online.DeviceAuth`), grants are read by
the real `shared.enrollment.read_grant`, and codes are checked by `shared.verify.verify_code`
with a lookup built from the database rows, so server and wallet are held to one protocol.
The last test drives the wallet library against a live server (tests/support/servers.py).
"""

from __future__ import annotations

import base64
import functools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from paycode.appkit.http_client import ServerClient
from paycode.client import online
from paycode.client.online import DeviceAuth
from paycode.client.wallet import Wallet
from paycode.server.app import create_app
from paycode.server.database.engine import db, make_engine
from paycode.server.database.models import (
    Account,
    Base,
    Device,
    IdempotencyRecord,
    Merchant,
    Payment,
    RequestNonce,
    User,
    WalletSession,
    new_id,
)
from paycode.server.operations import admin
from paycode.server.safety import keyring, passwords
from paycode.server.safety.secretbox import SecretBox
from paycode.server.wallets import devices, sessions
from paycode.shared.enrollment import b64, new_ed25519_seed, read_grant
from paycode.shared.errors import ServerRejected
from paycode.shared.key_proof import make_proof, session_scope
from paycode.shared.timestep import step_at
from paycode.shared.verify import verify_code
from paycode.shared.versions.base import Accepted, DeviceCredential, DeviceRecord, VerifyContext
from paycode.shared.versions.registry import by_name
from tests.support.configs import sqlite_test_config
from tests.support.servers import Server
from tests.support.shop import PASSWORD, code_of, new_till, new_user, use_fast_keystore

ALICE, ALICE_PASSWORD = "alice", "correct horse battery staple"
BOB, BOB_PASSWORD = "bob", "tr0ub4dor&3"
VERSIONS = ("v1", "v2", "v3")


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    keyring.forget_cache()
    config = sqlite_test_config(tmp_path, "t.db")
    engine = make_engine(config.database_url)
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        keyring.ensure_keys(session, SecretBox.from_config(config), time.time())
    engine.dispose()
    application = create_app(config)
    add_user(application, ALICE, ALICE_PASSWORD)
    add_user(application, BOB, BOB_PASSWORD)
    yield application
    application.extensions["paycode_engine"].dispose()
    keyring.forget_cache()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@functools.cache
def password_hash(password: str) -> str:
    """One real scrypt hash per password for the whole run: hashing costs ~50 ms a time."""
    return passwords.hash_password(password)


def add_user(app: Flask, name: str, password: str) -> str:
    """Users are made the way the operator CLI makes them: a scrypt hash, never the password."""
    user_id = new_id("usr")
    with app.app_context(), db.transaction() as session:
        session.add(
            User(
                id=user_id,
                name=name,
                password_hash=password_hash(password),
                created_at_s=time.time(),
            )
        )
    return user_id


def user_id(app: Flask, name: str) -> str:
    with app.app_context():
        found = db.session.scalar(select(User.id).where(User.name == name))
    assert found is not None
    return found


def count(app: Flask, model: type[Base]) -> int:
    with app.app_context():
        return int(db.session.scalar(select(func.count()).select_from(model)) or 0)


def login(client: FlaskClient, user: str = ALICE, password: str = ALICE_PASSWORD) -> str:
    reply = client.post("/v1/wallet/sessions", json={"user": user, "password": password})
    assert reply.status_code == 201, reply.json
    token = reply.json["token"] if reply.json else None
    assert isinstance(token, str)
    return token


@dataclass
class Enrolled:
    grant: dict[str, Any]
    credential: DeviceCredential

    @property
    def device_id(self) -> str:
        return str(self.grant["device_id"])

    def auth(self, offset_s: float = 0.0) -> DeviceAuth:
        return DeviceAuth(self.device_id, self.credential, offset_s)


def enroll_body(version: str, token: str = "", key: str = "") -> tuple[dict[str, Any], bytes]:
    """A body for POST /v1/wallet/devices; a v3 key's proof is bound to `token` and `key`."""
    body: dict[str, Any] = {"version": version, "label": "test phone"}
    seed = b""
    if version == "v3":
        seed, public_key = new_ed25519_seed()
        body["public_key"] = b64(public_key)
        body["proof"] = make_proof(seed, version, session_scope(token, key))
    return body, seed


def post_device(
    client: FlaskClient, token: str, body: dict[str, Any], key: str | None = "k-1"
) -> TestResponse:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/v1/wallet/devices", json=body, headers=headers)


def enroll(client: FlaskClient, version: str, *, token: str | None = None) -> Enrolled:
    token, key = token or login(client), os.urandom(8).hex()
    body, seed = enroll_body(version, token, key)
    reply = post_device(client, token, body, key=key)
    assert reply.status_code == 201, reply.json
    assert reply.json is not None
    credential, _ = read_grant(reply.json, ed25519_seed=seed)
    return Enrolled(reply.json, credential)


def signed_get(
    client: FlaskClient, device: Enrolled, path: str, *, offset_s: float = 0.0
) -> TestResponse:
    headers = device.auth(offset_s).sign("GET", path, b"")
    return client.get(path, headers=headers)


def assert_problem(reply: TestResponse, status: int, code: str, *, routed: bool = True) -> None:
    """A problem with the stable code; one from a wallet route also carries server_time."""
    assert reply.status_code == status, reply.get_data(as_text=True)
    assert reply.mimetype == "application/problem+json"
    assert reply.json is not None and reply.json["code"] == code
    assert reply.json["status"] == status
    if routed:
        assert abs(reply.json["server_time"] - sessions.now_s()) < 5


def db_lookup(app: Flask) -> Any:
    """(version, handle) -> DeviceRecord from the devices table, as the charge path reads it."""
    box: SecretBox = app.extensions["paycode_secrets"]

    def lookup(version: str, handle: bytes) -> DeviceRecord | None:
        with app.app_context():
            row = db.session.scalars(
                select(Device).where(Device.version == version, Device.handle == handle)
            ).one_or_none()
            if row is None:
                return None
            key = devices.device_verify_key(row, box)
            revoked = row.revoked_at_s is not None
            return DeviceRecord(row.id, row.handle, key, row.drift_steps, revoked)

    return lookup


def verify_with_db(app: Flask, text: str, now_s: float) -> Any:
    with app.app_context():
        keys, _ = keyring.load_keys(db.session, app.extensions["paycode_secrets"])
        db.session.rollback()
    return verify_code(text, VerifyContext(now_s, db_lookup(app), keys))


# --- log in -------------------------------------------------------------------------------------


def test_login_returns_a_token_and_stores_only_its_hash(app: Flask, client: FlaskClient) -> None:
    before = time.time()
    reply = client.post("/v1/wallet/sessions", json={"user": ALICE, "password": ALICE_PASSWORD})
    assert reply.status_code == 201
    body = reply.json
    assert body is not None and set(body) == {"token", "expires_at", "server_time"}
    assert before <= body["server_time"] <= time.time()
    ttl_s = app.config["PAYCODE"].session_ttl_s
    assert body["expires_at"] == pytest.approx(before + ttl_s, abs=5)
    with app.app_context():
        rows = db.session.scalars(select(WalletSession)).all()
    assert [row.token_hash for row in rows] == [sessions.token_hash(body["token"])]
    assert body["token"] not in rows[0].token_hash


def test_unknown_user_and_wrong_password_get_one_answer_at_one_cost(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    real_verify = passwords.verify_password

    def spy(password: str, stored: str) -> bool:
        checked.append(stored)
        return real_verify(password, stored)

    monkeypatch.setattr(sessions, "verify_password", spy)
    answers = []
    for user, password in ((ALICE, "wrong"), ("mallory", "wrong"), ("mallory", ALICE_PASSWORD)):
        reply = client.post("/v1/wallet/sessions", json={"user": user, "password": password})
        assert_problem(reply, 401, "unauthorized")
        assert reply.json is not None
        answers.append({k: v for k, v in reply.json.items() if k != "server_time"})
    assert answers[0] == answers[1] == answers[2]
    # The unknown user still ran one full-cost scrypt check (today's parameters).
    assert len(checked) == 3
    assert all(stored.startswith(f"scrypt${passwords.N}${passwords.R}$") for stored in checked)


@pytest.mark.parametrize(
    "body",
    [{}, {"user": ALICE}, {"user": "", "password": "x"}, {"user": 5, "password": "x"},
     {"user": ALICE, "password": ["x"]}, {"user": "a" * 65, "password": "x"},
     {"user": ALICE, "password": "p" * 1025}],
)  # fmt: skip
def test_login_refuses_malformed_bodies(client: FlaskClient, body: dict[str, Any]) -> None:
    assert_problem(client.post("/v1/wallet/sessions", json=body), 400, "invalid_request")


def test_a_token_expires_after_its_ttl(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = login(client)
    ttl_s = app.config["PAYCODE"].session_ttl_s
    later = time.time() + ttl_s + 1
    monkeypatch.setattr(sessions, "now_s", lambda: later)
    body, _ = enroll_body("v1")
    assert_problem(post_device(client, token, body), 401, "unauthorized")
    assert count(app, Device) == 0
    # A fresh login at that time works, and purges the expired session.
    enroll(client, "v1", token=login(client))
    assert count(app, WalletSession) == 1


@pytest.mark.parametrize("authorization", ["", "Bearer", "Bearer nope", "Basic abc", "bearer  "])
def test_enrollment_needs_a_valid_token(
    app: Flask, client: FlaskClient, authorization: str
) -> None:
    reply = client.post(
        "/v1/wallet/devices",
        json={"version": "v1"},
        headers={"Authorization": authorization, "Idempotency-Key": "k"},
    )
    assert_problem(reply, 401, "unauthorized")
    assert count(app, Device) == 0


# --- enrollment ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_enroll_each_version_and_its_codes_verify(
    app: Flask, client: FlaskClient, version: str
) -> None:
    device = enroll(client, version)
    grant = device.grant
    assert grant["version"] == version and grant["counter_max"] == by_name(version).counter_max
    assert abs(grant["server_time"] - time.time()) < 5
    if version == "v3":
        assert "device_key" not in grant and "hiding_key" not in grant
    alice = user_id(app, ALICE)
    with app.app_context():
        row = db.session.get(Device, device.device_id)
        assert row is not None
        assert (row.user_id, row.version, row.label) == (alice, version, "test phone")
        assert row.handle == device.credential.handle and row.revoked_at_s is None
        if version == "v3":
            assert row.key_sealed is None and row.public_key is not None
        else:
            assert row.public_key is None and row.key_sealed is not None
    now_s = time.time()
    codec = by_name(version)
    for counter in range(2):
        text = codec.generate(device.credential, step=step_at(now_s), counter=counter)
        result = verify_with_db(app, text, now_s)
        assert isinstance(result, Accepted), result
        assert (result.device.device_id, result.counter) == (device.device_id, counter)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_device_key_is_stored_sealed_only(
    app: Flask, client: FlaskClient, tmp_path: Path, version: str
) -> None:
    device = enroll(client, version)
    key = device.credential.secret
    assert len(key) == 32
    with app.app_context():
        row = db.session.get(Device, device.device_id)
        assert row is not None and row.key_sealed is not None and row.key_id == "mk1"
        assert key not in row.key_sealed
        box: SecretBox = app.extensions["paycode_secrets"]
        assert box.open(row.key_id, row.key_sealed, row_id=row.id) == key
        # The idempotency record keeps the device id, not the grant.
        record = db.session.scalars(select(IdempotencyRecord)).one()
        assert str(device.grant["device_key"]) not in record.response_body
    app.extensions["paycode_engine"].dispose()  # checkpoint the WAL into the file
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("t.db*"))
    assert key not in stored and base64.b64encode(key) not in stored


def test_a_retry_returns_the_same_grant_and_makes_one_device(
    app: Flask, client: FlaskClient
) -> None:
    token = login(client)
    body, _ = enroll_body("v1")
    first = post_device(client, token, body, key="retry-1")
    second = post_device(client, token, body, key="retry-1")
    # A retry after logging in again (a new token) is the same user, so the same grant.
    third = post_device(client, login(client), body, key="retry-1")
    assert first.status_code == second.status_code == third.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert first.json is not None and second.json is not None and third.json is not None
    assert second.json["server_time"] >= first.json["server_time"]
    for reply in (second.json, third.json):
        assert {**reply, "server_time": 0} == {**first.json, "server_time": 0}
    assert count(app, Device) == 1


def test_same_key_with_a_different_body_is_a_conflict(app: Flask, client: FlaskClient) -> None:
    token = login(client)
    assert post_device(client, token, {"version": "v1"}, key="k").status_code == 201
    assert_problem(
        post_device(client, token, {"version": "v2"}, key="k"), 409, "idempotency_conflict"
    )
    # Another user's identical key is another scope: no conflict.
    bob = login(client, BOB, BOB_PASSWORD)
    assert post_device(client, bob, {"version": "v2"}, key="k").status_code == 201
    assert count(app, Device) == 2


def test_enrollment_needs_an_idempotency_key(app: Flask, client: FlaskClient) -> None:
    reply = post_device(client, login(client), {"version": "v1"}, key=None)
    assert_problem(reply, 400, "invalid_request")
    assert count(app, Device) == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"version": "v9"},
        {"version": 1},
        {"version": "v3"},
        {"version": "v3", "public_key": "not base64!"},
        {"version": "v3", "public_key": b64(b"\x01" * 31)},
        {"version": "v3", "public_key": b64(b"\x01" * 33)},
        {"version": "v3", "public_key": 123},
        {"version": "v1", "public_key": b64(b"\x01" * 32)},
        {"version": "v1", "label": 7},
    ],
)
def test_enrollment_refuses_bad_bodies(
    app: Flask, client: FlaskClient, body: dict[str, Any]
) -> None:
    token = login(client)
    assert_problem(post_device(client, token, body), 400, "invalid_request")
    assert count(app, Device) == 0
    assert count(app, IdempotencyRecord) == 0
    # The key was not spent: the corrected request under the same key succeeds.
    assert post_device(client, token, {"version": "v2"}).status_code == 201


def test_a_long_label_is_cut_not_refused(app: Flask, client: FlaskClient) -> None:
    reply = post_device(client, login(client), {"version": "v1", "label": "x" * 300})
    assert reply.status_code == 201 and reply.json is not None
    with app.app_context():
        row = db.session.get(Device, reply.json["device_id"])
        assert row is not None and row.label == "x" * devices.LABEL_CHARS_MAX


def test_handle_collisions_are_decided_by_the_unique_index(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = by_name("v2")
    taken, fresh = b"\x11" * codec.handle_bytes, b"\x22" * codec.handle_bytes
    handles = iter([taken, taken, taken, fresh])
    monkeypatch.setattr(codec, "new_handle", lambda rng=os.urandom: next(handles))
    token = login(client)
    first = post_device(client, token, {"version": "v2"}, key="a")
    second = post_device(client, token, {"version": "v2"}, key="b")
    assert first.json is not None and second.json is not None
    assert (first.json["handle"], second.json["handle"]) == (taken.hex(), fresh.hex())
    assert count(app, Device) == 2


def test_running_out_of_handles_is_not_remembered_by_the_key(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = login(client)
    codec = by_name("v1")
    taken = bytes.fromhex(str(enroll(client, "v1", token=token).grant["handle"]))
    with monkeypatch.context() as patch:
        patch.setattr(codec, "new_handle", lambda rng=os.urandom: taken)
        assert_problem(
            post_device(client, token, {"version": "v1"}, key="x"), 500, "internal_error"
        )
    assert count(app, Device) == 1 and count(app, IdempotencyRecord) == 1
    assert post_device(client, token, {"version": "v1"}, key="x").status_code == 201


# --- signed calls -------------------------------------------------------------------------------


def seed_money(app: Flask) -> None:
    """Alice: 88.00 CNY and 5 JPY, three payments; Bob: one payment that she must not see."""
    alice, bob = user_id(app, ALICE), user_id(app, BOB)
    with app.app_context(), db.transaction() as session:
        session.add(Merchant(id="mer_cafe", name="Corner Cafe", currency="CNY", created_at_s=0))
        session.add(Account(owner_kind="user", owner_id=alice, currency="JPY", balance_minor=5))
        session.add(Account(owner_kind="user", owner_id=alice, currency="CNY", balance_minor=8800))
        session.add(Account(owner_kind="user", owner_id=bob, currency="CNY", balance_minor=1))
        for pay_id, who, amount, at_s, status in (
            ("pay_old", alice, 100, 1_700_000_000.0, "succeeded"),
            ("pay_new", alice, 1250, 1_800_000_000.0, "succeeded"),
            ("pay_mid", alice, 999, 1_750_000_000.0, "failed"),
            ("pay_bob", bob, 500, 1_900_000_000.0, "succeeded"),
        ):
            session.add(
                Payment(
                    id=pay_id,
                    merchant_id="mer_cafe",
                    user_id=who,
                    amount_minor=amount,
                    currency="CNY",
                    refunded_minor=50 if pay_id == "pay_new" else 0,
                    status=status,
                    created_at_s=at_s,
                )
            )


@pytest.mark.parametrize("version", VERSIONS)
def test_signed_balance(app: Flask, client: FlaskClient, version: str) -> None:
    seed_money(app)
    device = enroll(client, version)
    reply = signed_get(client, device, "/v1/wallet/balance")
    assert reply.status_code == 200 and reply.json is not None
    assert reply.json["accounts"] == [
        {"currency": "CNY", "balance": "88.00", "balance_minor": 8800},
        {"currency": "JPY", "balance": "5", "balance_minor": 5},
    ]
    assert abs(reply.json["server_time"] - time.time()) < 5


def test_signed_history_is_newest_first_and_only_mine(app: Flask, client: FlaskClient) -> None:
    seed_money(app)
    device = enroll(client, "v3")
    reply = signed_get(client, device, "/v1/wallet/history")
    assert reply.status_code == 200 and reply.json is not None
    items = reply.json["items"]
    assert [item["payment_id"] for item in items] == ["pay_new", "pay_mid", "pay_old"]
    assert items[0] == {
        "payment_id": "pay_new",
        "created_at": "2027-01-15T08:00:00Z",
        "merchant": "Corner Cafe",
        "amount": "12.50",
        "currency": "CNY",
        "status": "succeeded",
        "refunded": "0.50",
    }
    assert items[1]["status"] == "failed"
    limited = signed_get(client, device, "/v1/wallet/history?limit=1")
    assert limited.json is not None
    assert [item["payment_id"] for item in limited.json["items"]] == ["pay_new"]
    assert "server_time" in limited.json


def test_a_new_user_has_empty_balance_and_history(client: FlaskClient) -> None:
    device = enroll(client, "v1")
    balance = signed_get(client, device, "/v1/wallet/balance").json
    history = signed_get(client, device, "/v1/wallet/history?limit=100").json
    assert balance is not None and balance["accounts"] == []
    assert history is not None and history["items"] == []


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1", "", "1.5", "٣", "1000"])
def test_history_limit_out_of_range(client: FlaskClient, limit: str) -> None:
    device = enroll(client, "v2")
    assert_problem(
        signed_get(client, device, f"/v1/wallet/history?limit={limit}"), 400, "invalid_request"
    )


def test_tampered_signature_is_refused(client: FlaskClient) -> None:
    device = enroll(client, "v1")
    headers = device.auth().sign("GET", "/v1/wallet/balance", b"")
    signature = bytearray(base64.b64decode(headers["Paycode-Signature"]))
    signature[0] ^= 1
    headers["Paycode-Signature"] = base64.b64encode(bytes(signature)).decode()
    assert_problem(client.get("/v1/wallet/balance", headers=headers), 401, "unauthorized")
    # Signed for one path, sent to another.
    headers = device.auth().sign("GET", "/v1/wallet/history?limit=5", b"")
    reply = client.get("/v1/wallet/history?limit=6", headers=headers)
    assert_problem(reply, 401, "unauthorized")
    # Another device's id on this device's signature.
    other = enroll(client, "v1")
    headers = device.auth().sign("GET", "/v1/wallet/balance", b"")
    headers["Paycode-Device"] = other.device_id
    assert_problem(client.get("/v1/wallet/balance", headers=headers), 401, "unauthorized")


@pytest.mark.parametrize("offset_s", [-310.0, 310.0])
def test_stale_timestamp_is_refused(client: FlaskClient, offset_s: float) -> None:
    device = enroll(client, "v2")
    reply = signed_get(client, device, "/v1/wallet/balance", offset_s=offset_s)
    assert_problem(reply, 401, "unauthorized")
    assert (
        signed_get(client, device, "/v1/wallet/balance", offset_s=offset_s / 2).status_code == 200
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_replayed_nonce_is_refused(client: FlaskClient, version: str) -> None:
    device = enroll(client, version)
    headers = device.auth().sign("GET", "/v1/wallet/balance", b"")
    assert client.get("/v1/wallet/balance", headers=headers).status_code == 200
    assert_problem(client.get("/v1/wallet/balance", headers=headers), 401, "unauthorized")


def test_refused_request_does_not_spend_its_nonce(client: FlaskClient) -> None:
    device = enroll(client, "v1")
    headers = device.auth().sign("GET", "/v1/wallet/history?limit=0", b"")
    assert_problem(
        client.get("/v1/wallet/history?limit=0", headers=headers), 400, "invalid_request"
    )
    assert_problem(
        client.get("/v1/wallet/history?limit=0", headers=headers), 400, "invalid_request"
    )


def test_old_nonces_are_purged(app: Flask, client: FlaskClient) -> None:
    device = enroll(client, "v1")
    scope = f"device:{device.device_id}"
    with app.app_context(), db.transaction() as session:
        session.add(RequestNonce(scope=scope, nonce="0" * 32, expires_at_s=time.time() - 1))
    assert signed_get(client, device, "/v1/wallet/balance").status_code == 200
    with app.app_context():
        nonces = db.session.scalars(select(RequestNonce.nonce)).all()
    assert len(nonces) == 1 and nonces[0] != "0" * 32


def test_revoked_or_unknown_device_is_refused(app: Flask, client: FlaskClient) -> None:
    device = enroll(client, "v3")
    assert signed_get(client, device, "/v1/wallet/balance").status_code == 200
    with app.app_context(), db.transaction() as session:
        row = session.get(Device, device.device_id)
        assert row is not None
        row.revoked_at_s = time.time()
    assert_problem(signed_get(client, device, "/v1/wallet/balance"), 401, "unauthorized")
    ghost = Enrolled({**device.grant, "device_id": "dev_0000000000000000"}, device.credential)
    assert_problem(signed_get(client, ghost, "/v1/wallet/history"), 401, "unauthorized")


@pytest.mark.parametrize(
    "drop", ["Paycode-Device", "Paycode-Timestamp", "Paycode-Nonce", "Paycode-Signature"]
)
def test_missing_signature_headers_are_refused(client: FlaskClient, drop: str) -> None:
    device = enroll(client, "v1")
    headers = device.auth().sign("GET", "/v1/wallet/balance", b"")
    del headers[drop]
    assert_problem(client.get("/v1/wallet/balance", headers=headers), 401, "unauthorized")


def test_bad_header_values_are_refused_not_crashing(client: FlaskClient) -> None:
    device = enroll(client, "v1")
    base = device.auth().sign("GET", "/v1/wallet/balance", b"")
    for name, value in (
        ("Paycode-Timestamp", "12e9"),
        ("Paycode-Timestamp", "-5"),
        ("Paycode-Nonce", "short"),
        ("Paycode-Signature", "%%%"),
        ("Paycode-Device", "x" * 500),
    ):
        reply = client.get("/v1/wallet/balance", headers={**base, name: value})
        assert_problem(reply, 401, "unauthorized")


# --- malformed requests -------------------------------------------------------------------------


def test_malformed_requests_get_problems_never_500(app: Flask, client: FlaskClient) -> None:
    sessions = "/v1/wallet/sessions"
    json_type = {"Content-Type": "application/json"}
    assert_problem(client.post(sessions, data="{nope", headers=json_type), 400, "invalid_request")
    assert_problem(client.post(sessions, data="[1, 2]", headers=json_type), 400, "invalid_request")
    assert_problem(
        client.post(sessions, data="\xff\xfe", headers=json_type), 400, "invalid_request"
    )
    deep = "[" * 30_000 + "]" * 30_000
    assert_problem(client.post(sessions, data=deep, headers=json_type), 400, "invalid_request")
    nested = '{"a":' * 20 + "1" + "}" * 20
    assert_problem(client.post(sessions, data=nested, headers=json_type), 400, "invalid_request")
    form = client.post(sessions, data={"user": ALICE, "password": ALICE_PASSWORD})
    assert_problem(form, 415, "unsupported_media_type")
    plain = client.post(sessions, data="{}", headers={"Content-Type": "text/plain"})
    assert_problem(plain, 415, "unsupported_media_type")
    big = {"user": ALICE, "password": "x" * (app.config["PAYCODE"].body_bytes_max + 1)}
    assert_problem(client.post(sessions, json=big), 413, "payload_too_large")
    assert_problem(client.get(sessions), 405, "method_not_allowed", routed=False)
    assert_problem(client.get("/v1/wallet/nothing"), 404, "not_found", routed=False)
    token = login(client)
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "m", **json_type}
    reply = client.post("/v1/wallet/devices", data="{", headers=headers)
    assert_problem(reply, 400, "invalid_request")
    reply = client.post(
        "/v1/wallet/devices", data="{}", headers={**headers, "Idempotency-Key": "é"}
    )
    assert_problem(reply, 400, "invalid_request")


# --- the real wallet over real HTTP ---------------------------------------------------------------


def test_wallet_library_end_to_end_over_http(
    live_sqlite: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wallet library against `paycode-server run`: enroll, a code of each version paid at
    a real till, balance and history as the wallet reads them, and a typed refusal."""
    use_fast_keystore(monkeypatch)
    name = new_user(live_sqlite, "alice", top_up="88.00")
    new_user(live_sqlite, "bob", top_up="1.00")  # another customer, whom she must not see
    wallet = Wallet.open_or_create(tmp_path / "wallet")
    result = online.enroll(
        wallet, ServerClient(live_sqlite.url), user=name, password=PASSWORD, versions=list(VERSIONS)
    )
    assert [info.version for info in result.granted] == list(VERSIONS)
    assert abs(result.clock_offset_s) < 2.0
    with live_sqlite.session() as session:
        owner = admin.find_user(session, name).id
        assert session.scalar(select(func.count()).where(Device.user_id == owner)) == 3
    till = new_till(live_sqlite)
    paid = []
    for version, amount in zip(VERSIONS, ("12.50", "9.99", "1.00"), strict=True):
        payment = till.charge(code=code_of(wallet, version), amount=amount, currency="CNY")
        assert payment["status"] == "succeeded", payment
        paid.append(payment["payment_id"])
    balance = online.balance(wallet)
    assert balance["accounts"] == [{"currency": "CNY", "balance": "64.51", "balance_minor": 6451}]
    history = online.history(wallet, limit=2)
    assert [item["payment_id"] for item in history["items"]] == paid[:0:-1]
    # Wrong password through the real client: the stable code reaches the wallet.
    with pytest.raises(ServerRejected) as caught:
        online.enroll(
            Wallet.open_or_create(tmp_path / "other"),
            ServerClient(live_sqlite.url),
            user=name,
            password="wrong",
            versions=["v1"],
        )
    assert caught.value.code == "unauthorized"
