"""Codes issued online (docs/spec.md §14), on SQLite and PostgreSQL: the real wallet library
asks POST /v1/wallet/codes over the signed wallet API, and a real terminal client charges the
code at a till, through the app in this process (the `server` fixture, both backends).

Accepted when (issue 23, part 3): an online-issued code is charged at a till, refused on
replay, refused after its lifetime, and never issued to a revoked device.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from paycode.client import cli as wallet_cli
from paycode.client import online, pending
from paycode.client.history_text import history_line
from paycode.client.wallet import Wallet
from paycode.server.database.models import Device, IdempotencyRecord, Payment
from paycode.server.database.online_models import ONLINE_CODES_PER_STEP, OnlineCode
from paycode.server.operations import admin, purge
from paycode.server.wallets import sessions
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.timestep import STEP_SECONDS, step_at
from paycode.shared.versions.registry import route
from tests.support.books import assert_books_clean, balance_minor
from tests.support.servers import InProcessServer, Server
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
from tests.support.wallet_server import closed_port_url, intercepted, server_clock

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
    assert history_line(item).endswith("succeeded, code issued online  " + item["merchant"])
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


def test_regression_the_bound_stored_its_429_under_the_key_and_said_no_retry_after(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: past the bound, the 429 was stored under the Idempotency-Key (a retry
    with that key got the 429 forever) and had no Retry-After, unlike every other
    rate_limited of the API (docs/api.md: nothing is stored, Retry-After says when)."""
    _, wallet = _phone(server, tmp_path)
    step_start_s = float(step_at(time.time()) * STEP_SECONDS)
    monkeypatch.setattr(sessions, "now_s", lambda: step_start_s + 1.0)
    for _ in range(ONLINE_CODES_PER_STEP):
        online.issue_code(wallet)
    assert isinstance(server, InProcessServer) and server.app is not None
    client = server.app.test_client()
    enrollment = wallet.enrollment()
    data = json.dumps({"version": "v2"}).encode()

    def post() -> Any:
        auth = online.DeviceAuth(enrollment.device_id, enrollment.credential)
        headers = auth.sign("POST", "/v1/wallet/codes", data) | {
            "Idempotency-Key": "retry-after-the-bound",
            "Content-Type": "application/json",
        }
        return client.post("/v1/wallet/codes", data=data, headers=headers)

    bounded = post()
    assert (bounded.status_code, bounded.get_json()["code"]) == (429, ErrorCode.RATE_LIMITED)
    assert bounded.headers["Retry-After"] == str(STEP_SECONDS - 1)
    monkeypatch.setattr(sessions, "now_s", lambda: step_start_s + STEP_SECONDS + 1.0)
    issued = post()  # the same key, the step turned: issued, not the 429 again
    assert issued.status_code == 201 and issued.get_json()["issued_online"] is True


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


def test_the_code_is_neither_logged_nor_kept(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The code is a bearer secret until it pays: it is in the one answer that issued it and
    in the till's request, and in no log line (every attribute of every record searched), nor
    in the idempotency record, which keeps only where the code is (issuer, step, counter)."""
    _, wallet = _phone(server, tmp_path)
    caplog.set_level(logging.DEBUG)
    code = online.issue_code(wallet)["code"]
    charge(new_till(server), code)
    refused(ErrorCode.CODE_REPLAYED, charge, new_till(server), code)
    assert caplog.records, "the request log is captured (a positive control)"
    for record in caplog.records:
        assert code not in record.getMessage()
        assert code not in repr(vars(record))
    with server.session() as session:
        stored = session.scalars(
            select(IdempotencyRecord.response_body).where(
                IdempotencyRecord.scope == f"device:{wallet.enrollment().device_id}"
            )
        ).all()
    assert stored and all(code not in body and "step" in body for body in stored)


def test_the_wallet_cli_prints_a_code_issued_online(
    server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`paycode-wallet code --online` (its `main`, in this process, against the app): the code
    and the note that the server issued it; it pays at a till; usage errors are typed."""
    name = new_user(server, "online")
    new_phone(server, tmp_path / name, name, ["v3"])
    monkeypatch.setenv(wallet_cli.HOME_ENV, str(tmp_path / name))
    assert wallet_cli.main(["code", "--online"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[1].startswith("issued by the server (online): pays once, expires in ")
    assert charge(new_till(server), shown[0])["issued_online"] is True
    assert wallet_cli.main(["code", "--online", "--version", "v1", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (answer["version"], answer["issued_online"]) == ("v1", True)
    assert charge(new_till(server), answer["code"])["code_version"] == "v1"
    for wrong in (["--version", "v3"], ["--show"], ["--offline"]):
        assert wallet_cli.main(["code", "--online", *wrong, "--json"]) != 0
        assert json.loads(capsys.readouterr().out)["error"]["code"] == ErrorCode.USAGE
    assert wallet_cli.main(["code", "--pin-stdin", "--json"]) != 0


def test_the_wallet_cli_says_when_the_server_is_unreachable(
    server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, wallet = _phone(server, tmp_path)
    wallet.set_server(closed_port_url(), name)
    monkeypatch.setenv(wallet_cli.HOME_ENV, str(tmp_path / name))
    assert wallet_cli.main(["code", "--online", "--json"]) != 0
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == ErrorCode.SERVER_UNREACHABLE
    assert "needs the network" in error["message"]
