"""Codes issued online (docs/spec.md §14), on SQLite and PostgreSQL: the real wallet library
asks POST /v1/wallet/codes over the signed wallet API, and a real terminal client charges the
code at a till, through the app in this process (the `server` fixture, both backends).

Accepted when (issue 23, part 3): an online-issued code is charged at a till, refused on
replay, refused after its lifetime, and never issued to a revoked device.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from paycode.client import online, pending
from paycode.client.wallet import Wallet
from paycode.server.database.models import Device, Payment
from paycode.server.database.online_models import ONLINE_CODES_PER_STEP, OnlineCode
from paycode.server.operations import admin, purge
from paycode.server.wallets import sessions
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.timestep import STEP_SECONDS, step_at
from paycode.shared.versions.registry import route
from tests.support.books import assert_books_clean, balance_minor
from tests.support.servers import Server
from tests.support.shop import (
    PASSWORD,
    charge,
    code_of,
    new_phone,
    new_till,
    new_user,
    refused,
    use_fast_keystore,
    user_id,
)
from tests.support.wallet_server import intercepted, server_clock

PIN = "246810"


@pytest.fixture(autouse=True)
def _fast_wallets(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


def _phone(server: Server, home: Path, versions: list[str] | None = None) -> tuple[str, Wallet]:
    name = new_user(server, "online")
    return name, new_phone(server, home / name, name, versions or ["v2"])


def _issuers(server: Server, device_id: str) -> list[Device]:
    with server.session() as session:
        return list(session.scalars(select(Device).where(Device.online_for_device_id == device_id)))


def test_an_issued_code_pays_at_a_till_and_is_marked_issued_online(
    server: Server, tmp_path: Path
) -> None:
    name, wallet = _phone(server, tmp_path)
    phone_id = wallet.enrollment().device_id
    issued = online.issue_code(wallet)
    assert issued["version"] == "v2" and issued["issued_online"] is True
    assert route(issued["code"]).version == "v2", "it looks to the till like any v2 code"
    assert 30 <= issued["expires_in_s"] <= 60 and issued["user_verified"] is False
    till = new_till(server)
    paid = charge(till, issued["code"], "12.34")
    assert paid["status"] == PaymentStatus.SUCCEEDED and paid["issued_online"] is True
    assert till.payment(paid["payment_id"])["issued_online"] is True
    (issuer,) = _issuers(server, phone_id)
    payer_id = user_id(server, name)
    with server.session() as session:
        payment = session.get(Payment, paid["payment_id"])
        assert payment is not None
        # Recorded under the phone that asked, the issuer beside it; the user pays.
        assert (payment.device_id, payment.online_issuer_id) == (phone_id, issuer.id)
        assert payment.user_id == payer_id
    assert balance_minor(server, "user", payer_id) == 10_000 - 1234
    assert_books_clean(server)
    (item,) = online.history(wallet)["items"]
    assert item["issued_online"] is True
    # The phone's own codes are as they were: no mark.
    own = charge(till, code_of(wallet, "v2"), "1.00")
    assert "issued_online" not in own and "issued_online" not in till.payment(own["payment_id"])


def test_an_issued_code_pays_once(server: Server, tmp_path: Path) -> None:
    _, wallet = _phone(server, tmp_path)
    code = online.issue_code(wallet)["code"]
    till = new_till(server)
    charge(till, code)
    refused(ErrorCode.CODE_REPLAYED, charge, till, code)
    refused(ErrorCode.CODE_REPLAYED, charge, new_till(server), code)


def test_each_request_gets_its_own_code_and_a_retry_the_same(
    server: Server, tmp_path: Path
) -> None:
    _, wallet = _phone(server, tmp_path)
    codes = {online.issue_code(wallet)["code"] for _ in range(3)}
    assert len(codes) == 3
    body = {"version": "v2"}
    first = online.signed_call(wallet, "POST", "/v1/wallet/codes", body, idempotency_key="k-1")
    again = online.signed_call(wallet, "POST", "/v1/wallet/codes", body, idempotency_key="k-1")
    assert first.body["code"] == again.body["code"]
    till = new_till(server)
    for code in [*codes, first.body["code"]]:
        assert charge(till, code)["status"] == PaymentStatus.SUCCEEDED


def test_an_issued_code_is_refused_after_its_lifetime(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issued 61 s ago by the server's clock (the wallet API's clock seam): past every moment
    its window allows, so the till's charge now is code_expired, and the code is burned."""
    name, wallet = _phone(server, tmp_path)
    server_clock(monkeypatch, -(2 * STEP_SECONDS + 1))
    issued = online.issue_code(wallet)
    monkeypatch.undo()
    assert issued["expires_in_s"] <= 60
    till = new_till(server)
    refused(ErrorCode.CODE_EXPIRED, charge, till, issued["code"])
    assert balance_minor(server, "user", user_id(server, name)) == 10_000


def test_a_revoked_device_is_never_issued_a_code(server: Server, tmp_path: Path) -> None:
    _, wallet = _phone(server, tmp_path)
    with server.session() as session:
        admin.revoke_device(session, wallet.enrollment().device_id, time.time())
    refused(ErrorCode.UNAUTHORIZED, online.issue_code, wallet)


def test_revoking_the_device_stops_the_codes_issued_to_it(server: Server, tmp_path: Path) -> None:
    """A code issued before its device was revoked does not pay after: the issuer is revoked
    in the same transaction (the charge reads the issuer's row, as any device's)."""
    name, wallet = _phone(server, tmp_path, ["v2", "v1"])
    phone_id = wallet.enrollment().device_id  # the device that signs
    code = online.issue_code(wallet, version="v1")["code"]
    with server.session() as session:
        admin.revoke_device(session, phone_id, time.time())
    (issuer,) = _issuers(server, phone_id)
    assert issuer.revoked_at_s is not None
    refused(ErrorCode.DEVICE_REVOKED, charge, new_till(server), code)
    assert balance_minor(server, "user", user_id(server, name)) == 10_000


def test_the_pin_makes_a_user_verified_code(server: Server, tmp_path: Path) -> None:
    _, wallet = _phone(server, tmp_path)
    pending.set_pin(wallet, password=PASSWORD, pin=PIN)
    wrong = refused(ErrorCode.PIN_INVALID, online.issue_code, wallet, pin="135790")
    assert "tries" in wrong.message
    issued = online.issue_code(wallet, pin=PIN)
    assert issued["user_verified"] is True
    assert charge(new_till(server), issued["code"])["issued_online"] is True


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"version": "v3"}, ErrorCode.INVALID_REQUEST),
        ({"version": "v4"}, ErrorCode.INVALID_REQUEST),
        ({"version": 2}, ErrorCode.INVALID_REQUEST),
        ({"version": "v2", "amount": "1.00"}, ErrorCode.INVALID_REQUEST),
        ({"version": "v1", "pin": PIN}, ErrorCode.INVALID_REQUEST),
        ({"version": "v2", "pin": 246810}, ErrorCode.INVALID_REQUEST),
    ],
)
def test_bad_requests_get_typed_errors_and_issue_nothing(
    server: Server, tmp_path: Path, body: dict[str, object], code: str
) -> None:
    _, wallet = _phone(server, tmp_path)
    refused(code, online.signed_call, wallet, "POST", "/v1/wallet/codes", body,
            idempotency_key="bad-1")  # fmt: skip
    assert _issuers(server, wallet.enrollment().device_id) == []


def test_issuance_is_bounded_per_step(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most ONLINE_CODES_PER_STEP codes per device per step (the primary key's counter
    bound decides, race or not); the next is rate_limited and the next step issues again."""
    _, wallet = _phone(server, tmp_path)
    step_start_s = float(step_at(time.time()) * STEP_SECONDS)
    monkeypatch.setattr(sessions, "now_s", lambda: step_start_s + 1.0)
    for _ in range(ONLINE_CODES_PER_STEP):
        online.issue_code(wallet)
    refused(ErrorCode.RATE_LIMITED, online.issue_code, wallet)
    monkeypatch.setattr(sessions, "now_s", lambda: step_start_s + STEP_SECONDS + 1.0)
    online.issue_code(wallet)


def test_issuers_are_not_the_users_devices(server: Server, tmp_path: Path) -> None:
    """A v3-only phone is issued v2 codes, yet its device list, its code keys and the
    operator's device count stay as they were; the issuer never signs a wallet call."""
    name, wallet = _phone(server, tmp_path, ["v3"])
    online.issue_code(wallet)
    with intercepted(server) as exchanges:
        listed = online.signed_call(wallet, "GET", "/v1/wallet/devices").body["items"]
    assert [item["version"] for item in listed] == ["v3"]
    taught = json.loads(exchanges[-1].reply.body)["code_keys"]
    assert {key["version"] for key in taught} == {"v3"}, "no v2 hiding key for a v3 phone"
    with server.session() as session:
        assert [d.version for d in admin.list_devices(session, name, 100)] == ["v3"]


def test_the_purge_deletes_expired_issuance_rows(server: Server, tmp_path: Path) -> None:
    _, wallet = _phone(server, tmp_path)
    online.issue_code(wallet)
    with server.session() as session:
        before = session.scalar(select(func.count()).select_from(OnlineCode))
        purged = purge.purge_expired(session, time.time() + 10 * STEP_SECONDS)
        after = session.scalar(select(func.count()).select_from(OnlineCode))
    assert before is not None and before >= 1
    assert purged["online_codes"] >= 1 and after == 0
