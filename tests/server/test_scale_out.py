"""Scale-out: two `paycode-server serve` instances (two gunicorn workers each) on ONE PostgreSQL
database, as two hosts behind a load balancer run them (tests/live_server.py
start_live_servers: own port and instance folder each, the same database and master key).

Every race here is spread round-robin over both instances, so nothing in one process can
serialise it, only the database: a code pays once, an Idempotency-Key does its work once, and
no balance goes below zero, whichever host answers. Tills sign each request afresh with the
real terminal HMAC (shared/terminal_auth.py) and send it once, never retrying, so the test sees
every raw answer. The single-instance proofs are tests/test_server_concurrency.py.
"""

from __future__ import annotations

import uuid
from collections import Counter
from functools import partial
from pathlib import Path

import pytest

from paycode.shared.money import parse_amount
from tests.support.races import AMOUNT_MINOR, INSTANCES, WORKERS, Till
from tests.support.races import books as _books
from tests.support.races import customer as _customer
from tests.support.races import ledger_sum as _ledger_sum
from tests.support.races import merchant_balance as _merchant_balance
from tests.support.races import tills as _tills
from tests.support.races import workers_charging as _workers_charging
from tests.support.servers import LiveServer, all_at_once
from tests.support.shop import code_of, use_fast_keystore

pytestmark = pytest.mark.postgres

SAME_CODE_CHARGES = 50
SAME_KEY_CHARGES = 20
CODES_EACH = 12
BALANCES = {"4.50": 3, "10.00": 6, "13.00": 8, "30.00": 12}
"""A customer's balance -> how many of their CODES_EACH charges of AMOUNT it covers."""


@pytest.fixture(autouse=True)
def _fast_wallets(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


def test_instances_are_two_hosts_of_one_deployment(cluster: list[LiveServer]) -> None:
    first, second = cluster
    assert first.url != second.url
    assert first.instance != second.instance
    assert first.database_url == second.database_url
    differs = {
        k for k in first.env.keys() | second.env.keys() if first.env.get(k) != second.env.get(k)
    }
    assert differs == {"PAYCODE_INSTANCE"}  # the same master key: sealed rows open on both


def test_one_code_raced_across_instances_pays_once(
    cluster: list[LiveServer], tmp_path: Path
) -> None:
    name, wallet = _customer(cluster[0], tmp_path / "phone", "100.00")
    tills = _tills(cluster)
    code = code_of(wallet, "v2")
    answers = all_at_once(
        [
            partial(tills[i % INSTANCES].charge, code, str(uuid.uuid4()))
            for i in range(SAME_CODE_CHARGES)
        ]
    )
    outcomes = Counter((a.status, a.outcome) for a in answers)
    assert outcomes == {(201, "succeeded"): 1, (422, "code_replayed"): SAME_CODE_CHARGES - 1}
    # Both hosts refused the code, so one of them refused a payment the other one made.
    assert {a.url for a in answers if a.outcome == "code_replayed"} == {t.url for t in tills}
    _assert_processes_took_part(cluster, tills)
    (paid,) = [a for a in answers if a.status == 201]
    books = _books(cluster[0], name)
    assert books.payments == {paid.body["payment_id"]: ("succeeded", AMOUNT_MINOR)}
    assert books.balance_minor == books.entries_minor == 10_000 - AMOUNT_MINOR
    assert _ledger_sum(cluster[0]) == 0


def test_one_idempotency_key_raced_across_instances_pays_once(
    cluster: list[LiveServer], tmp_path: Path
) -> None:
    name, wallet = _customer(cluster[1], tmp_path / "phone", "100.00")
    tills = _tills(cluster)
    code, key = code_of(wallet, "v2"), str(uuid.uuid4())
    # One sale: the same key and body on every request, each signed afresh (its own nonce).
    answers = all_at_once(
        [partial(tills[i % INSTANCES].charge, code, key) for i in range(SAME_KEY_CHARGES)]
    )
    allowed = {(201, "succeeded"), (409, "idempotency_in_progress")}
    assert {(a.status, a.outcome) for a in answers} <= allowed, answers
    paid = [a for a in answers if a.status == 201]
    assert paid
    assert len({a.same_reply() for a in paid}) == 1  # the first response, as stored
    payment_id = paid[0].body["payment_id"]
    # Later retries of the sale, on either host, get that stored response too.
    retried = [till.charge(code, key) for till in tills]
    assert {(a.status, a.same_reply()) for a in retried} == {(201, paid[0].same_reply())}
    books = _books(cluster[0], name)
    assert books.payments == {payment_id: ("succeeded", AMOUNT_MINOR)}
    assert books.balance_minor == books.entries_minor == 10_000 - AMOUNT_MINOR
    assert _ledger_sum(cluster[0]) == 0


def test_many_codes_across_instances_never_overdraw(
    cluster: list[LiveServer], tmp_path: Path
) -> None:
    customers = [
        (*_customer(cluster[i % INSTANCES], tmp_path / f"phone{i}", top_up), top_up)
        for i, top_up in enumerate(BALANCES)
    ]
    merchants = [_tills(cluster), _tills(cluster)]  # two, each reached on both hosts
    tills = [till for merchant in merchants for till in merchant]
    charges = [
        (name, code_of(wallet, "v2")) for name, wallet, _ in customers for _ in range(CODES_EACH)
    ]
    assert len({code for _, code in charges}) == len(charges)
    # Customer-major order, tills round-robin: every customer pays at every till on every host.
    answers = all_at_once(
        [
            partial(tills[i % len(tills)].charge, code, str(uuid.uuid4()))
            for i, (_, code) in enumerate(charges)
        ]
    )
    allowed = {(201, "succeeded"), (422, "insufficient_funds")}
    assert {(a.status, a.outcome) for a in answers} <= allowed, answers
    _assert_processes_took_part(cluster, tills)
    paid_ids = [a.body["payment_id"] for a in answers if a.status == 201]
    assert len(set(paid_ids)) == len(paid_ids)
    debited_minor = 0
    for name, _, top_up in customers:
        mine = [a for (payer, _), a in zip(charges, answers, strict=True) if payer == name]
        successes = sum(a.status == 201 for a in mine)
        assert successes == BALANCES[top_up], (name, top_up, Counter(a.outcome for a in mine))
        books = _books(cluster[0], name)
        start_minor = parse_amount(top_up, "CNY").amount_minor
        assert books.balance_minor == books.entries_minor == start_minor - successes * AMOUNT_MINOR
        assert books.balance_minor >= 0
        debited_minor += start_minor - books.balance_minor
        # Every 201 is exactly one succeeded payment row; nothing else of theirs succeeded.
        succeeded = {pid for pid, (status, _) in books.payments.items() if status == "succeeded"}
        assert succeeded == {a.body["payment_id"] for a in mine if a.status == 201}
        assert all(books.payments[pid] == ("succeeded", AMOUNT_MINOR) for pid in succeeded)
        # Every refusal claimed its code and left one failed payment behind, no more.
        failed = [status for status, _ in books.payments.values() if status == "failed"]
        assert len(failed) == len(mine) - successes == len(books.payments) - len(succeeded)
    assert len(paid_ids) * AMOUNT_MINOR == debited_minor
    credited_minor = sum(_merchant_balance(cluster[0], merchant[0]) for merchant in merchants)
    assert credited_minor == debited_minor
    assert _ledger_sum(cluster[0]) == 0


def _assert_processes_took_part(cluster: list[LiveServer], tills: list[Till]) -> None:
    """Every host answered charges of the race, from its own processes. Which of a host's
    workers did is the kernel's choice: a threaded worker accepts while its threads are busy,
    and one of them may take a whole burst (seen: 24 of 24)."""
    served = [_workers_charging(server, tills) for server in cluster]
    assert all(1 <= len(pids) <= WORKERS for pids in served), served
    assert not set(served[0]) & set(served[1])  # two hosts: no process in common
