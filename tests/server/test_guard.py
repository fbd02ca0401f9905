"""The guessing guard: failed verifications per terminal, merchant and IP, and the back-off
arithmetic of the counters, on both databases.

Each test gets a fresh bank (tests.support.shop.open_bank) on the module's in-process server,
with no failure counters left from the tests before it, and its own guard numbers (the app's
configuration, put back afterwards). The Retry-After header is read with urllib through the
app (tests.support.in_process.urlopen); a live server reading the guard's numbers from its
environment and answering over HTTP is tests/reliability/test_forgery.py's subject."""

from __future__ import annotations

import dataclasses
import os
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from sqlalchemy import Engine, delete, text

from paycode.appkit.http_client import ServerClient
from paycode.client.online import DeviceAuth
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.config import ServerConfig
from paycode.server.database.models import FailureCounter, Merchant
from paycode.server.operations import admin
from paycode.server.safety import guard
from paycode.server.safety.guard import GuardScopes, GuardSettings
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.checkdigit import damm_digit
from paycode.shared.enrollment import new_ed25519_seed
from paycode.shared.errors import ServerRejected
from paycode.shared.timestep import step_at
from paycode.shared.versions import v1_numeric
from paycode.shared.versions.registry import by_name
from tests.support.in_process import reconfigure, urlopen
from tests.support.servers import Server
from tests.support.shop import Bank, open_bank

START_MINOR = 10_000
BAD_CODE = v1_numeric.PREFIX + "0" * 21 + damm_digit(v1_numeric.PREFIX + "0" * 21)
"""Junk that is refused as code_invalid whatever the bank's hiding key: v1 carries no
merchant-bound flag (v2 junk unmasks to random flags and may read as bound elsewhere:
merchant_mismatch)."""


@pytest.fixture
def bank(server: Server) -> Bank:
    """A fresh customer and two fresh merchants, and no failure counter from an earlier test
    (the address 127.0.0.1 is every test's)."""
    with server.session() as session:
        session.execute(delete(FailureCounter))
    return open_bank(server, START_MINOR)


def configure_guard(monkeypatch: pytest.MonkeyPatch, bank: Bank, **numbers: Any) -> None:
    """The app's guessing guard, for this test: its configuration with other numbers."""
    reconfigure(monkeypatch, bank.server, guard=GuardSettings(**numbers))


def _tills(bank: Bank) -> list[TerminalClient]:
    return [bank.till(index) for index in range(len(bank.terminals))]


def _code(bank: Bank, counter: int) -> str:
    return bank.code("v2", counter=counter)


def _error(till: TerminalClient, code: str) -> ServerRejected:
    with pytest.raises(ServerRejected) as caught:
        till.charge(code=code, amount="1.00", currency="CNY")
    return caught.value


def test_guessing_at_one_terminal_blocks_it_and_only_it(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_guard(monkeypatch, bank, terminal_failures_max=3, ip_failures_max=99)
    cafe, other = _tills(bank)
    assert [_error(cafe, BAD_CODE).code for _ in range(3)] == ["code_invalid"] * 3
    blocked = _error(cafe, _code(bank, 0))
    assert (blocked.code, blocked.status) == ("rate_limited", 429)
    assert bank.balance_minor("user", bank.user_id) == START_MINOR
    assert other.charge(code=_code(bank, 0), amount="1.00", currency="CNY")["status"] == "succeeded"


def test_the_block_says_when_to_retry(bank: Bank, monkeypatch: pytest.MonkeyPatch) -> None:
    configure_guard(monkeypatch, bank, terminal_failures_max=1, backoff_base_s=90.0)
    cafe = _tills(bank)[0]
    _error(cafe, BAD_CODE)
    body = b'{"code": "x", "amount": "1.00", "currency": "CNY"}'
    from paycode.shared.terminal_auth import sign_headers

    headers = sign_headers(
        cafe.key_id, cafe.secret, "POST", "/v1/charges", body, timestamp_s=int(time.time())
    )
    headers |= {"Content-Type": "application/json", "Idempotency-Key": "k-retry-after"}
    request = urllib.request.Request(f"{bank.url}/v1/charges", body, headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urlopen(bank.server, request)
    assert caught.value.code == 429
    assert 85 <= int(caught.value.headers["Retry-After"]) <= 90


def test_one_address_guessing_at_many_terminals_is_blocked(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At one merchant's tills (the address counter is per merchant: test_guard_lockout)."""
    configure_guard(monkeypatch, bank, terminal_failures_max=99, ip_failures_max=2)
    cafe, other = _tills(bank)[0], _second_till(bank)
    assert _error(cafe, BAD_CODE).code == "code_invalid"
    assert _error(other, BAD_CODE).code == "code_invalid"
    assert _error(cafe, _code(bank, 0)).code == "rate_limited"
    assert _error(other, _code(bank, 1)).code == "rate_limited"


def _second_till(bank: Bank) -> TerminalClient:
    """Another terminal of the first merchant."""
    box = SecretBox.from_config(ServerConfig.from_env(bank.server.env))
    with bank.server.session() as session:
        merchant = session.get(Merchant, bank.merchant_id(0))
        assert merchant is not None
        terminal, secret = admin.create_terminal(session, box, merchant.name, time.time())
        key_id = terminal.id
    return TerminalClient(bank.url, key_id, secret, sleep=lambda _s: None)


def test_honest_failures_are_not_counted(bank: Bank, monkeypatch: pytest.MonkeyPatch) -> None:
    configure_guard(monkeypatch, bank, terminal_failures_max=2)
    cafe = _tills(bank)[0]
    _, credential = bank.device("v2")
    stale = by_name("v2").generate(credential, step=step_at(time.time() - 600), counter=0)
    paid = _code(bank, 3)
    cafe.charge(code=paid, amount="1.00", currency="CNY")
    for _ in range(3):
        assert _error(cafe, stale).code == "code_expired"
        assert _error(cafe, paid).code == "code_replayed"
    assert cafe.charge(code=_code(bank, 4), amount="1.00", currency="CNY")["status"] == "succeeded"


def _count(engine: Engine, scopes: GuardScopes, settings: GuardSettings, now_s: float) -> None:
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                text("SELECT paycode_count_failure(:s, :l, :now, :w, :b, :m)"),
                {
                    "s": list(scopes.names),
                    "l": list(scopes.limits),
                    "now": now_s,
                    "w": settings.window_s,
                    "b": settings.backoff_base_s,
                    "m": settings.backoff_max_s,
                },
            )
        else:
            guard.count_failure(connection, scopes, settings, now_s)


def _until(engine: Engine, scope: str) -> float | None:
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT blocked_until_s FROM failure_counters WHERE scope = :s"), {"s": scope}
        ).first()
    return None if row is None else row[0]


def test_backoff_doubles_and_resets_after_quiet(bank: Bank) -> None:
    """Both databases run the same arithmetic: limit 2, base 60 s, max 600 s, window 300 s."""
    settings = GuardSettings(window_s=300, backoff_base_s=60, backoff_max_s=600)
    scopes = GuardScopes(("terminal:t-backoff",), (2,))
    _count(bank.server.engine, scopes, settings, 1000.0)
    assert _until(bank.server.engine, "terminal:t-backoff") is None
    _count(bank.server.engine, scopes, settings, 1001.0)
    assert _until(bank.server.engine, "terminal:t-backoff") == 1061.0
    _count(bank.server.engine, scopes, settings, 1100.0)
    _count(bank.server.engine, scopes, settings, 1101.0)
    assert _until(bank.server.engine, "terminal:t-backoff") == 1101.0 + 120
    for index in range(8):  # blocks keep doubling up to the maximum
        _count(bank.server.engine, scopes, settings, 2000.0 + 10 * index)
        _count(bank.server.engine, scopes, settings, 2001.0 + 10 * index)
    assert _until(bank.server.engine, "terminal:t-backoff") == 2071.0 + 600
    _count(bank.server.engine, scopes, settings, 9000.0)  # long quiet: the strikes reset
    _count(bank.server.engine, scopes, settings, 9001.0)
    assert _until(bank.server.engine, "terminal:t-backoff") == 9061.0


def test_merchant_ip_allow_list(bank: Bank) -> None:
    """The first merchant's terminals may only call from 10.0.0.0/8; the second's from
    loopback."""
    with bank.server.engine.begin() as connection:
        for merchant_id, networks in (
            (bank.merchant_id(0), "10.0.0.0/8"),
            (bank.merchant_id(1), "127.0.0.0/8,::1/128"),
        ):
            connection.execute(
                text("UPDATE merchants SET allowed_cidrs = :n WHERE id = :id"),
                {"n": networks, "id": merchant_id},
            )
    cafe, other = _tills(bank)
    refused = _error(cafe, _code(bank, 0))
    assert (refused.code, refused.status) == ("forbidden", 403)
    with pytest.raises(ServerRejected) as caught:
        cafe.payments_by_order("any")
    assert caught.value.code == "forbidden"
    assert other.charge(code=_code(bank, 0), amount="1.00", currency="CNY")["status"] == "succeeded"
    assert bank.balance_minor("user", bank.user_id) == START_MINOR - 100


def test_allow_list_is_validated() -> None:
    from paycode.server.operations.admin import check_networks
    from paycode.shared.errors import ApiError

    assert check_networks(["10.1.2.3/8", "::1"]) == "10.0.0.0/8,::1/128"
    assert check_networks([]) is None
    with pytest.raises(ApiError) as caught:
        check_networks(["not-a-network"])
    assert caught.value.code == "invalid_argument"


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_forgeries_aimed_at_one_device_from_many_tills_block_it_at_their_merchant(
    bank: Bank, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone who extracted a version's hiding key (or, for v3, anyone: the seal key is
    public) names a victim's device in forged codes from several tills of one merchant; the
    handle's counter at that merchant catches what no till's counter sees. Its genuine codes
    then pay nothing there until the block ends, and pay at any other merchant
    (tests/server/test_guard_lockout.py: no third party locks a customer out)."""
    configure_guard(monkeypatch, bank,
        terminal_failures_max=99, merchant_failures_max=99, ip_failures_max=99,
        device_failures_max=3,
    )  # fmt: skip
    _, genuine = bank.device(version)
    forger = dataclasses.replace(genuine, secret=_wrong_key(version))
    codec, step = by_name(version), step_at(time.time())
    tills = [_tills(bank)[0], _second_till(bank)]
    forged = [codec.generate(forger, step=step, counter=n) for n in range(4)]
    assert [_error(tills[n % 2], forged[n]).code for n in range(3)] == ["code_invalid"] * 3
    assert _error(tills[1], forged[3]).code == "rate_limited"  # the handle's counter there
    real = codec.generate(genuine, step=step, counter=5)
    blocked = _error(tills[0], real)
    assert (blocked.code, blocked.status) == ("rate_limited", 429)
    assert bank.balance_minor("user", bank.user_id) == START_MINOR
    paid = bank.till(1).charge(code=real, amount="1.00", currency="CNY")  # not burned there
    assert paid["status"] == "succeeded"


def test_a_device_locked_before_issue_19_is_unlocked_by_its_wallets_call(bank: Bank) -> None:
    """Before issue 19 the guard locked a device everywhere (devices.locked_at_s); such a
    lock still answers device_locked until the phone makes one signed online call."""
    device_id, genuine = bank.device("v2")
    with bank.server.session() as session:
        session.execute(
            text("UPDATE devices SET locked_at_s = :now WHERE id = :id"),
            {"now": time.time(), "id": device_id},
        )
    real = _code(bank, 3)
    locked = _error(bank.till(0), real)
    assert (locked.code, locked.status) == ("device_locked", 422)
    wallet_call = ServerClient(bank.url).call(
        "GET", "/v1/wallet/balance", signer=DeviceAuth(device_id, genuine).sign
    )
    assert wallet_call.body["accounts"]
    assert bank.till(0).charge(code=real, amount="1.00", currency="CNY")["status"] == "succeeded"


def _wrong_key(version: str) -> bytes:
    if version == "v3":
        seed, _ = new_ed25519_seed()
        return seed
    return os.urandom(32)
