"""2. Races across workers and instances: the same code, and the same Idempotency-Key, raced
round after round across two `paycode-server serve` instances (two gunicorn workers each) on
one PostgreSQL database.

tests/test_scale_out.py proves each race once; here they repeat (SHORT: 2 rounds each, FULL: 50)
and every round is judged on its own, from the answers and from the database:

- same code: 50 requests at one moment, each with its own Idempotency-Key, spread round-robin
  over both hosts. Exactly one 201 `succeeded`, every other answer 422 `code_replayed`, one new
  succeeded payment, and the customer debited once.
- same key: 20 requests of one sale (one key, one body, each signed afresh), over both hosts.
  Every answer a 201 with the one stored reply (or 409 `idempotency_in_progress`, allowed by
  docs/api.md), one payment, one debit, and a retry on each host replays the same reply.

An anomaly is a round with other than one success, a second debit, or a reply that does not
match. The tills are tests/race_fixture.py's: real terminal signatures, each request sent once.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from functools import partial
from pathlib import Path

import pytest

from tests.reliability.figures import Figures, Scale
from tests.support.races import (
    AMOUNT_MINOR,
    INSTANCES,
    WORKERS,
    Answer,
    Books,
    Till,
    books,
    customer,
    ledger_sum,
    merchant_balance,
    tills,
    workers_charging,
)
from tests.support.servers import LiveServer, all_at_once
from tests.support.shop import code_of, use_fast_keystore

pytestmark = pytest.mark.postgres

SECTION = "2. Races across workers and instances"
SAME_CODE_CHARGES = 50
SAME_KEY_CHARGES = 20
TOP_UP_MINOR_MAX = 99_999_999
"""A customer's balance covers every round with room to spare (a second debit would show)."""


@pytest.fixture(autouse=True)
def _fast_wallets(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


def _top_up_for(rounds: int) -> str:
    minor = min(TOP_UP_MINOR_MAX, 2 * rounds * AMOUNT_MINOR + 10_000)
    return f"{minor // 100}.{minor % 100:02d}"


def _debit_checks(
    figures: Figures, where: str, before: Books, after: Books, paid_ids: set[str]
) -> None:
    """One round's books: the paid answer is the one new succeeded payment, debited once."""
    new = {pid: row for pid, row in after.payments.items() if pid not in before.payments}
    succeeded = {pid for pid, (status, _) in new.items() if status == "succeeded"}
    if succeeded != paid_ids:
        figures.anomaly(f"{where}: new succeeded payments {sorted(succeeded)} != {paid_ids}")
    if len(new) != 1:
        figures.anomaly(f"{where}: {len(new)} new payment rows, not 1: {new}")
    debited = before.balance_minor - after.balance_minor
    if debited != AMOUNT_MINOR:
        figures.anomaly(f"{where}: debited {debited} minor units, not {AMOUNT_MINOR}")
    if after.balance_minor != after.entries_minor:
        figures.anomaly(f"{where}: balance {after.balance_minor} != entries {after.entries_minor}")


def test_same_code_races_across_instances_pay_once_every_round(
    cluster: list[LiveServer], tmp_path: Path, figures: Figures, scale: Scale
) -> None:
    figures.section = SECTION
    rounds = scale.pick(short=2, full=50)
    name, wallet = customer(cluster[0], tmp_path / "phone", _top_up_for(rounds))
    merchant = tills(cluster)
    outcomes: Counter[str] = Counter()
    seconds: list[float] = []
    for number in range(rounds):
        where = f"same-code round {number}"
        before = books(cluster[0], name)
        code = code_of(wallet, "v2")
        started = time.monotonic()
        answers = all_at_once(
            [
                partial(merchant[i % INSTANCES].charge, code, str(uuid.uuid4()))
                for i in range(SAME_CODE_CHARGES)
            ]
        )
        seconds.append(time.monotonic() - started)
        figures.runs += 1
        figures.operations += len(answers)
        seen = Counter((a.status, a.outcome) for a in answers)
        outcomes.update({f"{status} {outcome}": n for (status, outcome), n in seen.items()})
        expected = {(201, "succeeded"): 1, (422, "code_replayed"): SAME_CODE_CHARGES - 1}
        if seen != expected:
            figures.anomaly(f"{where}: answers {dict(seen)}")
        paid = {str(a.body.get("payment_id")) for a in answers if a.status == 201}
        _debit_checks(figures, where, before, books(cluster[0], name), paid)
    _ledger_and_workers(figures, cluster, merchant, rounds, every_worker=True)
    figures.details.update(
        requests_per_round=SAME_CODE_CHARGES,
        instances=INSTANCES,
        workers_each=WORKERS,
        answers=", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())),
        round_s_max=round(max(seconds), 2),
        round_s_median=round(sorted(seconds)[len(seconds) // 2], 2),
    )
    assert figures.anomalies == 0, figures.anomaly_notes


def test_same_idempotency_key_races_across_instances_pay_once_every_round(
    cluster: list[LiveServer], tmp_path: Path, figures: Figures, scale: Scale
) -> None:
    figures.section = SECTION
    rounds = scale.pick(short=2, full=50)
    name, wallet = customer(cluster[1], tmp_path / "phone", _top_up_for(rounds))
    merchant = tills(cluster)
    outcomes: Counter[str] = Counter()
    in_progress = 0
    for number in range(rounds):
        where = f"same-key round {number}"
        before = books(cluster[0], name)
        code, key = code_of(wallet, "v2"), str(uuid.uuid4())
        answers = all_at_once(
            [partial(merchant[i % INSTANCES].charge, code, key) for i in range(SAME_KEY_CHARGES)]
        )
        figures.runs += 1
        figures.operations += len(answers)
        outcomes.update(f"{a.status} {a.outcome}" for a in answers)
        in_progress += sum(a.outcome == "idempotency_in_progress" for a in answers)
        allowed = {(201, "succeeded"), (409, "idempotency_in_progress")}
        if not {(a.status, a.outcome) for a in answers} <= allowed:
            figures.anomaly(f"{where}: answers {Counter((a.status, a.outcome) for a in answers)}")
        paid = [a for a in answers if a.status == 201]
        replies = {a.same_reply() for a in paid}
        if len(replies) != 1:
            figures.anomaly(f"{where}: {len(paid)} 201s with {len(replies)} different replies")
        # Later retries of the sale, on either host, replay the stored first response.
        retried = [till.charge(code, key) for till in merchant]
        figures.operations += len(retried)
        if not _replays(retried, replies):
            figures.anomaly(f"{where}: retries answered {[(a.status, a.body) for a in retried]}")
        paid_ids = {str(a.body.get("payment_id")) for a in paid}
        _debit_checks(figures, where, before, books(cluster[0], name), paid_ids)
    _ledger_and_workers(figures, cluster, merchant, rounds, every_worker=False)
    figures.details.update(
        requests_per_round=SAME_KEY_CHARGES,
        retries_per_round=len(merchant),
        instances=INSTANCES,
        workers_each=WORKERS,
        answers=", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())),
        idempotency_in_progress=in_progress,
    )
    assert figures.anomalies == 0, figures.anomaly_notes


def _replays(retried: list[Answer], replies: set[str]) -> bool:
    return len(replies) == 1 and all(a.status == 201 and a.same_reply() in replies for a in retried)


def _ledger_and_workers(
    figures: Figures,
    cluster: list[LiveServer],
    merchant: list[Till],
    rounds: int,
    *,
    every_worker: bool,
) -> None:
    """After all rounds: the ledger balances and the merchant got one amount per round. With
    `every_worker`, every instance must have answered some of the race. Which of an instance's
    workers did is the kernel's choice, and a threaded worker accepts while its threads are
    busy, so one may take a whole round: the figures record how many answered."""
    total = ledger_sum(cluster[0])
    if total != 0:
        figures.anomaly(f"ledger sums to {total}, not 0")
    credited = merchant_balance(cluster[0], merchant[0])
    if credited != rounds * AMOUNT_MINOR:
        figures.anomaly(f"merchant credited {credited}, not {rounds} x {AMOUNT_MINOR}")
    workers = [len(workers_charging(server, merchant)) for server in cluster]
    figures.details["workers_that_answered"] = "+".join(str(count) for count in workers)
    if every_worker and not all(1 <= count <= WORKERS for count in workers):
        figures.anomaly(f"workers answering per instance {workers}: an instance took no part")
