"""Concurrency proofs on PostgreSQL with `paycode-server serve --workers 4` (real processes).

SQLite would pass these trivially (it serialises writers); PostgreSQL with several worker
processes is where a check-then-insert or an unconditional debit would show.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from paycode.appkit.http_client import ServerClient
from paycode.client import online
from paycode.client.wallet import Wallet
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.books import ledger
from paycode.server.database.models import User
from paycode.shared.errors import ServerRejected
from tests.support.servers import LiveServer, postgres_database, start_server

pytestmark = pytest.mark.postgres
CLIENTS = 50


@pytest.fixture(scope="module")
def bank4() -> Iterator[LiveServer]:
    with (
        postgres_database(migrated=True) as url,
        start_server("postgres", database_url=url, mode="serve", workers=4) as server,
    ):
        yield server


def _ok(done: Any) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return str(done.stdout)


def _customer(
    server: LiveServer, home: Path, name: str, amount: str, monkeypatch: pytest.MonkeyPatch
) -> Wallet:
    """The admin commands run in this process (tests.support.servers.run_cli_in_process): they only
    set the race up, and a process each would cost about a second."""
    cli = server.cli_in_process
    _ok(cli("users", "create", name, "--password-stdin", stdin="password-" + name + "\n"))
    _ok(cli("users", "top-up", name, amount))
    # Every payment here may go without the PIN: these tests race money, not limits.
    _ok(cli("users", "limits", name, "--daily-count", "1000"))
    monkeypatch.setenv("PAYCODE_WALLET_PASSPHRASE", "test passphrase")
    wallet = Wallet.open_or_create(home)
    online.enroll(
        wallet, ServerClient(server.url), user=name, password="password-" + name, versions=["v2"]
    )
    return wallet


def _terminal(server: LiveServer, merchant: str) -> TerminalClient:
    _ok(server.cli_in_process("merchants", "create", merchant, "--currency", "CNY"))
    created = json.loads(_ok(server.cli_in_process("terminals", "create", merchant, "--json")))
    return TerminalClient(server.url, created["key_id"], base64.b64decode(created["secret"]))


def _all_at_once(calls: list[Callable[[], dict[str, Any]]]) -> list[str]:
    """Run every call at the same moment; each outcome is 'succeeded' or the error code."""
    barrier = threading.Barrier(len(calls))

    def one(call: Callable[[], dict[str, Any]]) -> str:
        barrier.wait(timeout=30)
        try:
            return str(call()["status"])
        except ServerRejected as error:
            return error.code

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(one, calls))


def _balances(server: LiveServer, user: str) -> tuple[int, int]:
    with server.session() as session:
        user_id = session.query(User.id).filter(User.name == user).scalar()
        account = ledger.account(session, "user", user_id, "CNY")
        assert account is not None
        return account.balance_minor, ledger.ledger_sum_minor(session)


def test_fifty_charges_of_one_code_succeed_once(
    bank4: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wallet = _customer(bank4, tmp_path / "w1", "racer1", "100.00", monkeypatch)
    pos = _terminal(bank4, "Race Shop 1")
    code = wallet.next_code("v2", local_now_s=time.time()).text
    calls = [
        (
            lambda: pos.charge(
                code=code, amount="1.00", currency="CNY", idempotency_key=str(uuid.uuid4())
            )
        )
        for _ in range(CLIENTS)
    ]
    outcomes = _all_at_once(calls)
    assert outcomes.count("succeeded") == 1, outcomes
    assert outcomes.count("code_replayed") == CLIENTS - 1, outcomes
    balance_minor, ledger_sum = _balances(bank4, "racer1")
    assert balance_minor == 10_000 - 100
    assert ledger_sum == 0


def test_fifty_codes_against_a_balance_for_ten(
    bank4: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wallet = _customer(bank4, tmp_path / "w2", "racer2", "10.00", monkeypatch)
    pos = _terminal(bank4, "Race Shop 2")
    now_s = time.time()
    codes = [wallet.next_code("v2", local_now_s=now_s).text for _ in range(CLIENTS)]
    assert len(set(codes)) == CLIENTS
    calls = [(lambda c=c: pos.charge(code=c, amount="1.00", currency="CNY")) for c in codes]
    outcomes = _all_at_once(calls)
    assert outcomes.count("succeeded") == 10, outcomes
    assert outcomes.count("insufficient_funds") == CLIENTS - 10, outcomes
    balance_minor, ledger_sum = _balances(bank4, "racer2")
    assert balance_minor == 0
    assert ledger_sum == 0
    again = _all_at_once(
        [(lambda c=c: pos.charge(code=c, amount="1.00", currency="CNY")) for c in codes[:5]]
    )
    assert set(again) == {"code_replayed"}  # every code was claimed, paid or not


def test_one_idempotency_key_from_fifty_clients_debits_once(
    bank4: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wallet = _customer(bank4, tmp_path / "w3", "racer3", "100.00", monkeypatch)
    pos = _terminal(bank4, "Race Shop 3")
    code = wallet.next_code("v2", local_now_s=time.time()).text
    key = str(uuid.uuid4())
    outcomes = _all_at_once(
        [(lambda: pos.charge(code=code, amount="2.00", currency="CNY", idempotency_key=key))]
        * CLIENTS
    )
    assert set(outcomes) <= {"succeeded", "idempotency_in_progress"}, outcomes
    assert "succeeded" in outcomes
    balance_minor, ledger_sum = _balances(bank4, "racer3")
    assert balance_minor == 10_000 - 200
    assert ledger_sum == 0
