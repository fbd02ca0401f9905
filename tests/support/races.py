"""Tills and customers for racing charges against live servers (tests/test_scale_out.py,
tests/reliability/test_races.py, tests/reliability/test_network_faults.py), and the `cluster`
fixture both race modules use: INSTANCES `serve` instances of WORKERS workers on one fresh
PostgreSQL database, one per module (a pytest plugin, registered in tests/conftest.py).

A Till signs each request afresh with the real terminal HMAC (shared/terminal_auth.py) and
sends it once, never retrying, so a test sees every raw answer; the books are read straight
from the database.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from paycode.appkit.http_client import ServerClient
from paycode.client.wallet import Wallet
from paycode.server.books import ledger
from paycode.server.database.models import LedgerEntry, Payment, Terminal
from paycode.server.operations import admin
from paycode.shared import terminal_auth
from paycode.shared.errors import ServerRejected
from paycode.shared.money import parse_amount
from tests.support.servers import LiveServer, postgres_database, start_live_servers
from tests.support.shop import new_phone, new_till, new_user

INSTANCES = 2
WORKERS = 2
AMOUNT = "1.50"
AMOUNT_MINOR = parse_amount(AMOUNT, "CNY").amount_minor


@dataclass(frozen=True)
class Answer:
    url: str
    status: int
    outcome: str
    """The payment's status on a 2xx answer, else the problem's code."""
    body: dict[str, Any]

    def same_reply(self) -> str:
        """The reply without its per-response server_time, comparable across answers."""
        return json.dumps(
            {k: v for k, v in self.body.items() if k != "server_time"}, sort_keys=True
        )


@dataclass(frozen=True)
class Till:
    """One terminal key, reaching one instance."""

    url: str
    key_id: str
    secret: bytes = field(repr=False)

    def _sign(self, method: str, path: str, body: bytes) -> dict[str, str]:
        """A fresh timestamp and nonce per request, as merchant_pos.api.TerminalClient signs."""
        now_s = int(time.time())
        return terminal_auth.sign_headers(
            self.key_id, self.secret, method, path, body, timestamp_s=now_s
        )

    def charge(self, code: str, key: str, amount: str = AMOUNT) -> Answer:
        """POST /v1/charges once; a refusal is an answer too."""
        body = {"code": code, "amount": amount, "currency": "CNY"}
        client = ServerClient(self.url)
        try:
            reply = client.call("POST", "/v1/charges", body, signer=self._sign, idempotency_key=key)
        except ServerRejected as error:
            return Answer(self.url, error.status, error.code, {})
        return Answer(self.url, reply.status, str(reply.body["status"]), reply.body)


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[LiveServer]]:
    with (
        postgres_database() as url,
        start_live_servers(INSTANCES, database_url=url, workers=WORKERS) as servers,
    ):
        yield servers


def tills(cluster: list[LiveServer]) -> list[Till]:
    """A new merchant's terminal, as a till reaches it on each instance."""
    pos = new_till(cluster[0])
    return [Till(server.url, pos.key_id, pos.secret) for server in cluster]


def customer(server: LiveServer, home: Path, top_up: str) -> tuple[str, Wallet]:
    """A user with `top_up` CNY whose every payment goes without the PIN (these tests race
    money, not limits), and a phone enrolled through `server`."""
    name = new_user(server, "racer", top_up)
    with server.session() as session:
        admin.set_limits(
            session,
            name,
            "CNY",
            payment_max=None,
            daily_max=None,
            daily_count_max=admin.DAILY_COUNT_MAX,
            reset=False,
        )
    return name, new_phone(server, home, name, ["v2"])


@dataclass(frozen=True)
class Books:
    balance_minor: int
    entries_minor: int
    """The sum of the account's ledger entries: must equal the balance."""
    payments: dict[str, tuple[str, int]]
    """The user's payments: id -> (status, amount)."""


def books(server: LiveServer, name: str) -> Books:
    with server.session() as session:
        user_id = admin.find_user(session, name).id
        account = ledger.account(session, "user", user_id, "CNY")
        assert account is not None
        entries = session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0)).where(
                LedgerEntry.account_id == account.id
            )
        )
        rows = session.execute(
            select(Payment.id, Payment.status, Payment.amount_minor).where(
                Payment.user_id == user_id
            )
        ).all()
    payments = {row.id: (row.status, row.amount_minor) for row in rows}
    assert len(payments) == len(rows)
    return Books(account.balance_minor, int(entries or 0), payments)


def merchant_balance(server: LiveServer, till: Till) -> int:
    with server.session() as session:
        terminal = session.get(Terminal, till.key_id)
        assert terminal is not None
        account = ledger.account(session, "merchant", terminal.merchant_id, "CNY")
        assert account is not None
        return account.balance_minor


def workers_charging(server: LiveServer, tills: list[Till]) -> Counter[int]:
    """How many charges each worker process of `server` answered for these tills' terminals
    (its request log; a line is written before the response is sent)."""
    terminals = {till.key_id for till in tills}
    served: Counter[int] = Counter()
    for line in server.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"/v1/charges"' in line:
            entry = json.loads(line)
            if entry.get("route") == "/v1/charges" and entry.get("terminal_id") in terminals:
                served[entry["pid"]] += 1
    return served


def ledger_sum(server: LiveServer) -> int:
    with server.session() as session:
        return ledger.ledger_sum_minor(session)
