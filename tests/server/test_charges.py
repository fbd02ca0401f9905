"""Charges, payments and refunds with the real terminal client, on SQLite and PostgreSQL.

Each test gets a fresh bank (tests.support.shop.open_bank: a customer with a device per
version, two merchants with a till each) on the module's in-process server. The hostile bodies
and the signature checks are raw HTTP requests, so they go over real HTTP to the live servers
(`paycode-server run` on SQLite, gunicorn on PostgreSQL): the wire of this area."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import make_url, update

from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.config import ServerConfig
from paycode.server.database.models import Device, Terminal
from paycode.server.operations import admin
from paycode.server.safety.secretbox import SecretBox
from paycode.shared import terminal_auth
from paycode.shared.binding import MerchantBinding
from paycode.shared.errors import ServerRejected
from paycode.shared.timestep import STEP_SECONDS, step_at
from paycode.shared.versions.base import Flags
from paycode.shared.versions.registry import by_name
from tests.support.servers import InProcessServer, LiveServer, Server, admin_connection
from tests.support.shop import Bank, open_bank

START_MINOR = 10_000


@pytest.fixture
def bank(server: Server) -> Bank:
    """A fresh customer and two fresh merchants on the in-process server."""
    return open_bank(server, START_MINOR)


@pytest.fixture
def live_bank(live_server: LiveServer) -> Bank:
    """The same on the live server, for requests written byte by byte."""
    return open_bank(live_server, START_MINOR)


def terminal(bank: Bank, index: int = 0) -> TerminalClient:
    return bank.till(index)


def merchant_id(bank: Bank, index: int = 0) -> str:
    return bank.merchant_id(index)


def code(bank: Bank, version: str, *, counter: int = 0, at_s: float | None = None) -> str:
    return bank.code(version, counter=counter, at_s=at_s)


def tampered_tag(v2_code: str) -> str:
    """One character of the v2 tag changed. (Not the last character: that one lands in the
    flags byte, which could then read as a merchant-bound code: merchant_mismatch.)"""
    first = v2_code[3]
    return v2_code[:3] + ("A" if first != "A" else "B") + v2_code[4:]


def rejected(call: object) -> ServerRejected:
    assert isinstance(call, ServerRejected)
    return call


def expect_error(
    code_expected: str, func: object, *args: object, **kwargs: object
) -> ServerRejected:
    with pytest.raises(ServerRejected) as caught:
        func(*args, **kwargs)  # type: ignore[operator]
    assert caught.value.code == code_expected, caught.value.message
    return caught.value


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_charge_moves_money_once(bank: Bank, version: str) -> None:
    pos = terminal(bank)
    reply = pos.charge(
        code=code(bank, version), amount="12.50", currency="CNY", merchant_order_id="A-1"
    )
    assert reply["status"] == "succeeded" and reply["amount"] == "12.50"
    assert reply["code_version"] == version
    assert bank.balance_minor("user", bank.user_id) == START_MINOR - 1250
    assert bank.balance_minor("merchant", merchant_id(bank)) == 1250
    assert bank.ledger_sum_minor() == 0
    assert pos.payment(reply["payment_id"])["status"] == "succeeded"
    assert [p["payment_id"] for p in pos.payments_by_order("A-1")] == [reply["payment_id"]]


def test_replay_is_refused_and_moves_nothing(bank: Bank) -> None:
    pos = terminal(bank)
    text = code(bank, "v1")
    pos.charge(code=text, amount="1.00", currency="CNY")
    error = expect_error("code_replayed", pos.charge, code=text, amount="1.00", currency="CNY")
    assert error.status == 422
    assert bank.balance_minor("user", bank.user_id) == START_MINOR - 100


def test_idempotent_retry_returns_the_first_answer(bank: Bank) -> None:
    pos = terminal(bank)
    key = str(uuid.uuid4())
    text = code(bank, "v2")
    first = pos.charge(code=text, amount="3.00", currency="CNY", idempotency_key=key)
    again = pos.charge(code=text, amount="3.00", currency="CNY", idempotency_key=key)
    assert again["payment_id"] == first["payment_id"]
    assert bank.balance_minor("user", bank.user_id) == START_MINOR - 300
    expect_error(
        "idempotency_conflict",
        pos.charge,
        code=text,
        amount="4.00",
        currency="CNY",
        idempotency_key=key,
    )


def test_insufficient_funds_burns_the_code_and_records_a_failure(bank: Bank) -> None:
    pos = terminal(bank)
    text = code(bank, "v3")
    error = expect_error(
        "insufficient_funds", pos.charge, code=text, amount="1000.00", currency="CNY"
    )
    assert error.status == 422
    assert bank.balance_minor("user", bank.user_id) == START_MINOR
    expect_error("code_replayed", pos.charge, code=text, amount="1.00", currency="CNY")
    assert bank.ledger_sum_minor() == 0


def test_failure_is_stored_for_its_idempotency_key(bank: Bank) -> None:
    pos = terminal(bank)
    key, text = str(uuid.uuid4()), code(bank, "v1")
    expect_error(
        "insufficient_funds",
        pos.charge,
        code=text,
        amount="999.00",
        currency="CNY",
        idempotency_key=key,
    )
    expect_error(
        "insufficient_funds",
        pos.charge,
        code=text,
        amount="999.00",
        currency="CNY",
        idempotency_key=key,
    )


@pytest.mark.parametrize(
    ("text_of", "error_code"),
    [
        (lambda b: code(b, "v1", at_s=time.time() - 300), "code_expired"),
        (lambda b: tampered_tag(code(b, "v2")), "code_invalid"),
        (lambda b: "8700000000000000000000001", "code_malformed"),
        (lambda b: "https://example.com", "code_malformed"),
    ],
    ids=["expired", "tampered", "wrong-length", "not-a-code"],
)
def test_bad_codes_get_their_codes(bank: Bank, text_of: object, error_code: str) -> None:
    text = text_of(bank)  # type: ignore[operator]
    expect_error(error_code, terminal(bank).charge, code=text, amount="1.00", currency="CNY")
    assert bank.balance_minor("user", bank.user_id) == START_MINOR


def test_revoked_device_is_refused(bank: Bank) -> None:
    device_id, _ = bank.device("v2")
    bank.revoke(device_id)
    expect_error(
        "device_revoked",
        terminal(bank).charge,
        code=code(bank, "v2"),
        amount="1.00",
        currency="CNY",
    )


def test_revocations_reach_a_server_that_cached_the_secrets(bank: Bank) -> None:
    """Terminal secrets and device keys are cached per process; revocations must not be."""
    pos = terminal(bank)
    device_id, _ = bank.device("v1")
    pos.charge(code=code(bank, "v1", counter=0), amount="1.00", currency="CNY")  # now cached
    bank.revoke(device_id)
    later = code(bank, "v1", counter=1)
    expect_error("device_revoked", pos.charge, code=later, amount="1.00", currency="CNY")
    key_id, _ = next(iter(bank.terminals.values()))
    with bank.server.session() as session:
        session.execute(update(Terminal).where(Terminal.id == key_id).values(revoked_at_s=1.0))
    expect_error("unauthorized", pos.charge, code=code(bank, "v2"), amount="1.00", currency="CNY")
    assert bank.balance_minor("user", bank.user_id) == START_MINOR - 100
    assert bank.ledger_sum_minor() == 0


def test_drift_learned_elsewhere_is_used(bank: Bank) -> None:
    """Another worker learned that this device runs 3 steps fast; this server cached drift 0.
    Its codes verify here too: a code failing on a cached device is judged on fresh rows."""
    pos = terminal(bank)
    device_id, _ = bank.device("v2")
    pos.charge(code=code(bank, "v2", counter=0), amount="1.00", currency="CNY")
    with bank.server.session() as session:
        session.execute(update(Device).where(Device.id == device_id).values(drift_steps=3))
    fast = code(bank, "v2", counter=1, at_s=time.time() + 3 * STEP_SECONDS)
    assert pos.charge(code=fast, amount="1.00", currency="CNY")["status"] == "succeeded"
    assert bank.balance_minor("user", bank.user_id) == START_MINOR - 200


@pytest.mark.parametrize(
    "amount", ["-1.00", "0", "0.00", "1.234", "abc", "1e3", " 1.00", "\uff11.00", ""]
)
def test_bad_amounts_are_amount_invalid(bank: Bank, amount: str) -> None:
    expect_error(
        "amount_invalid",
        terminal(bank).charge,
        code=code(bank, "v1"),
        amount=amount,
        currency="CNY",
    )
    assert bank.balance_minor("user", bank.user_id) == START_MINOR


def test_wrong_currency(bank: Bank) -> None:
    pos = terminal(bank)
    expect_error(
        "currency_mismatch", pos.charge, code=code(bank, "v1"), amount="1.00", currency="USD"
    )
    expect_error("amount_invalid", pos.charge, code=code(bank, "v1"), amount="1.00", currency="XXX")
    expect_error("amount_invalid", pos.charge, code=code(bank, "v1"), amount="1.00", currency="156")
    expect_error("amount_invalid", pos.charge, code=code(bank, "v1"), amount="1.00", currency="cny")


def test_refunds_partial_then_rest_never_more(bank: Bank) -> None:
    pos = terminal(bank)
    paid = pos.charge(code=code(bank, "v1"), amount="10.00", currency="CNY")
    key = str(uuid.uuid4())
    first = pos.refund(paid["payment_id"], amount="4.00", idempotency_key=key)
    assert first["payment"]["refunded"] == "4.00"
    assert (
        pos.refund(paid["payment_id"], amount="4.00", idempotency_key=key)["refund_id"]
        == first["refund_id"]
    )
    expect_error("refund_exceeds_payment", pos.refund, paid["payment_id"], amount="6.01")
    rest = pos.refund(paid["payment_id"])
    assert rest["amount"] == "6.00" and rest["payment"]["refunded"] == "10.00"
    expect_error("refund_exceeds_payment", pos.refund, paid["payment_id"], amount="0.01")
    assert bank.balance_minor("user", bank.user_id) == START_MINOR
    assert bank.balance_minor("merchant", merchant_id(bank)) == 0
    assert bank.ledger_sum_minor() == 0


def test_a_terminal_sees_only_its_merchants_payments(bank: Bank) -> None:
    paid = terminal(bank, 0).charge(code=code(bank, "v1"), amount="2.00", currency="CNY")
    other = terminal(bank, 1)
    expect_error("not_found", other.payment, paid["payment_id"])
    expect_error("not_found", other.refund, paid["payment_id"])
    assert other.payments_by_order("nothing") == []


def bound_code(bank: Bank, version: str, binding: MerchantBinding, *, counter: int = 0) -> str:
    """What the wallet makes after scanning the collection QR that names `binding`."""
    _, credential = bank.device(version)
    return by_name(version).generate(
        credential,
        step=step_at(time.time()),
        counter=counter,
        flags=int(Flags.MERCHANT_BOUND),
        binding=binding.digest,
    )


def second_terminal(bank: Bank, merchant: str) -> TerminalClient:
    """Another till of the same merchant (the bank makes one per merchant), made as
    `terminals create` makes it."""
    box = SecretBox.from_config(ServerConfig.from_env(bank.server.env))
    with bank.server.session() as session:
        made, secret = admin.create_terminal(session, box, merchant, time.time())
        terminal_id = made.id
    return TerminalClient(bank.url, terminal_id, secret, sleep=lambda _s: None)


def elsewhere(version: str) -> str:
    """The refusal of a code bound to another charging point: a v3 one cannot be told from a
    forgery anyone sealed (paycode.server.charge.verification), so it is code_invalid."""
    return "code_invalid" if version == "v3" else "merchant_mismatch"


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_bound_code_relayed_to_another_merchant_is_refused_unburned(
    bank: Bank, version: str
) -> None:
    """Sniff-and-spend: the code made for Corner Cafe is relayed to Other Shop. Refused there
    before any claim, so the customer's code still pays at the cafe, once."""
    cafe, shop = merchant_id(bank, 0), merchant_id(bank, 1)
    text = bound_code(bank, version, MerchantBinding(cafe))
    error = expect_error(
        elsewhere(version), terminal(bank, 1).charge, code=text, amount="5.00", currency="CNY"
    )
    assert error.status == 422
    assert bank.balance_minor("user", bank.user_id) == START_MINOR
    assert bank.balance_minor("merchant", shop) == 0
    assert terminal(bank, 1).payments_by_order("nothing") == []
    paid = terminal(bank, 0).charge(code=text, amount="5.00", currency="CNY")
    assert paid["status"] == "succeeded" and paid["merchant_id"] == cafe
    assert bank.balance_minor("user", bank.user_id) == START_MINOR - 500
    assert bank.balance_minor("merchant", cafe) == 500
    expect_error(
        "code_replayed", terminal(bank, 0).charge, code=text, amount="5.00", currency="CNY"
    )
    assert bank.ledger_sum_minor() == 0


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_terminal_bound_code_pays_only_at_its_till(bank: Bank, version: str) -> None:
    cafe = merchant_id(bank, 0)
    till_1, _ = bank.terminals[cafe]
    till_2 = second_terminal(bank, cafe)
    text = bound_code(bank, version, MerchantBinding(cafe, till_1), counter=0)
    expect_error(elsewhere(version), till_2.charge, code=text, amount="2.00", currency="CNY")
    expect_error(
        elsewhere(version), terminal(bank, 1).charge, code=text, amount="2.00", currency="CNY"
    )
    assert bank.balance_minor("user", bank.user_id) == START_MINOR
    assert terminal(bank, 0).charge(code=text, amount="2.00", currency="CNY")["status"] == (
        "succeeded"
    )
    merchant_only = bound_code(bank, version, MerchantBinding(cafe), counter=1)
    assert till_2.charge(code=merchant_only, amount="1.00", currency="CNY")["status"] == (
        "succeeded"
    )
    assert bank.balance_minor("user", bank.user_id) == START_MINOR - 300
    assert bank.balance_minor("merchant", cafe) == 300
    assert bank.ledger_sum_minor() == 0


def _raw_post(bank: Bank, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        bank.url + "/v1/charges", data=body, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        assert error.headers.get_content_type() == "application/problem+json"
        return error.code, json.loads(error.read())


def _signed(
    bank: Bank, body: bytes, *, timestamp_s: int | None = None, secret: bytes | None = None
) -> dict[str, str]:
    key_id, real_secret = next(iter(bank.terminals.values()))
    headers = terminal_auth.sign_headers(
        key_id,
        secret or real_secret,
        "POST",
        "/v1/charges",
        body,
        timestamp_s=timestamp_s or int(time.time()),
    )
    return headers | {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error_code"),
    [
        (b"{not json", "application/json", 400, "invalid_request"),
        (b"[1, 2]", "application/json", 400, "invalid_request"),
        (
            b'{"code": 5, "amount": "1.00", "currency": "CNY"}',
            "application/json",
            400,
            "invalid_request",
        ),
        (
            b'{"code": "87", "amount": 12.5, "currency": "CNY"}',
            "application/json",
            400,
            "amount_invalid",
        ),
        (b'{"a":' * 50 + b"1" + b"}" * 50, "application/json", 400, "invalid_request"),
        (b"code=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b'{"code": "' + b"8" * 100_000 + b'"}', "application/json", 413, "payload_too_large"),
    ],
    ids=["malformed", "array", "code-not-string", "float-amount", "deep", "form", "huge"],
)
def test_hostile_bodies_get_problems(
    live_bank: Bank, body: bytes, content_type: str, status: int, error_code: str
) -> None:
    bank = live_bank  # raw HTTP: the live server
    headers = _signed(bank, body) | {"Content-Type": content_type}
    got_status, problem = _raw_post(bank, body, headers)
    assert (got_status, problem["code"]) == (status, error_code)
    assert "Traceback" not in json.dumps(problem)
    assert bank.balance_minor("user", bank.user_id) == START_MINOR


def test_signatures_are_checked(live_bank: Bank) -> None:
    bank = live_bank  # raw HTTP: the live server
    body = json.dumps({"code": code(bank, "v1"), "amount": "1.00", "currency": "CNY"}).encode()
    assert _raw_post(bank, body, _signed(bank, body, secret=b"x" * 32))[1]["code"] == "unauthorized"
    stale = _signed(bank, body, timestamp_s=int(time.time()) - 3600)
    assert _raw_post(bank, body, stale)[1]["code"] == "unauthorized"
    good = _signed(bank, body)
    assert _raw_post(bank, body, good)[0] == 201
    replayed = good | {"Idempotency-Key": str(uuid.uuid4())}
    assert _raw_post(bank, body, replayed)[1]["code"] == "unauthorized"
    unsigned = {"Content-Type": "application/json", "Idempotency-Key": "k"}
    assert _raw_post(bank, body, unsigned)[1]["code"] == "unauthorized"
    assert bank.balance_minor("user", bank.user_id) == START_MINOR - 100


def test_secrets_never_in_responses(bank: Bank) -> None:
    pos = terminal(bank)
    reply = pos.charge(code=code(bank, "v1"), amount="1.00", currency="CNY")
    text = json.dumps(reply)
    for device_id, credential in bank.credentials.items():
        assert credential.secret.hex() not in text and device_id not in text
    assert next(iter(bank.terminals.values()))[1].hex() not in text


def _kill_server_connections(bank: Bank) -> int:
    """Terminate the app's pooled PostgreSQL sessions, as a database restart would."""
    database = make_url(bank.server.database_url).database
    with admin_connection() as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)


@pytest.fixture
def postgres_bank(app_postgres: Server) -> Iterator[Bank]:
    """A bank on the in-process PostgreSQL server, whose pool is emptied afterwards: the test
    leaves dead connections in it on purpose."""
    yield open_bank(app_postgres, START_MINOR)
    assert isinstance(app_postgres, InProcessServer) and app_postgres.app is not None
    app_postgres.app.extensions["paycode_engine"].dispose()


@pytest.mark.postgres
def test_lost_database_connections_are_retryable_not_500(postgres_bank: Bank) -> None:
    """No pre-ping: a pooled connection found dead answers 503 database_busy (retryable), and
    the till's retry with the same key charges exactly once."""
    bank = postgres_bank
    pos = terminal(bank)
    pos.charge(code=code(bank, "v1", counter=0), amount="1.00", currency="CNY")
    bank.server.engine.dispose()
    assert _kill_server_connections(bank) >= 1
    single_try = TerminalClient(pos.base_url, pos.key_id, pos.secret)
    single_try_error = _one_attempt(single_try, code(bank, "v1", counter=1))
    assert (single_try_error.status, single_try_error.code) == (503, "database_busy")
    assert _kill_server_connections(bank) >= 0
    paid = pos.charge(code=code(bank, "v1", counter=2), amount="2.00", currency="CNY")
    assert paid["status"] == "succeeded"
    assert bank.balance_minor("user", bank.user_id) == START_MINOR - 300
    assert bank.ledger_sum_minor() == 0


def _one_attempt(pos: TerminalClient, text: str) -> ServerRejected:
    with pytest.raises(ServerRejected) as caught:
        pos._call(  # one HTTP attempt: ATTEMPTS_MAX retries would hide the 503
            "POST",
            "/v1/charges",
            {"code": text, "amount": "1.00", "currency": "CNY"},
            idempotency_key=str(uuid.uuid4()),
            attempts_max=1,
        )
    return caught.value
