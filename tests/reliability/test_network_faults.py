"""4. Network faults between the till and the server.

The till's own sale logic (merchant_pos.till.charge_code, what `paycode-pos charge` and the
camera sale run) drives the real terminal client (merchant_pos.api.TerminalClient: one
Idempotency-Key per sale, bounded retries) through a fault-injecting proxy on loopback
(tests/reliability/faultproxy.py) to a live `paycode-server serve` on PostgreSQL. A seeded plan
says, for each connection of each sale, what goes wrong: the request dropped before the server
sees it; the server's whole answer dropped (the work done, the till never hears); the answer
cut inside its status line, headers or body, closed or reset; the answer held within or beyond
the client's timeout; the request held beyond the till's whole retry schedule and then run by
the server anyway (a request stuck in a queue). Some sales fault every attempt, so the till
gives up.

Each sale is then judged against the database, read directly by its merchant_order_id: at most
one payment per order; the till's outcome is the server's (paid with that payment id, or not
paid); a till that gives up says "outcome unknown" with the order id, and a later query by
that id shows the truth; the customer is debited once per paid sale and the books balance.
Refunds of half a paid sale go through the same proxy, and must happen once per key, even when
the till gave up and retried later.

The client's timeout is short (CLIENT_TIMEOUT_S) and its back-off sleeps are scaled down
(BACKOFF_SCALE, through TerminalClient's `sleep`), so faults cost seconds, not minutes; the
attempts and their order are the production ones.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from paycode.client.wallet import Wallet
from paycode.merchant_pos import terminal_client as pos_api
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.merchant_pos.till import ConfirmWait, Sale, SaleOutcome, charge_code
from paycode.server.database.models import Payment, Refund
from paycode.shared.errors import ServerRejected, ServerUnreachable
from tests.reliability.faultproxy import Fault, FaultProxy, Region, Step, fault_proxy
from tests.reliability.figures import Figures, Scale
from tests.support.races import Till, books, customer, ledger_sum, merchant_balance
from tests.support.servers import LiveServer
from tests.support.shop import code_of, new_merchant, use_fast_keystore

pytestmark = pytest.mark.postgres

SECTION = "4. Network faults"
CLIENT_TIMEOUT_S = 0.5
BACKOFF_SCALE = 0.1
BACKOFF_TOTAL_S = BACKOFF_SCALE * sum(
    pos_api.BACKOFF_FIRST_S * 2**i for i in range(pos_api.ATTEMPTS_MAX - 1)
)
LATE_MARGIN_S = 0.5
LATE_AFTER_RETRIES_S = CLIENT_TIMEOUT_S + BACKOFF_TOTAL_S + LATE_MARGIN_S
"""A first attempt held this long outlives the till's other attempts when they fail fast."""
TOP_UP = "5000.00"
STEPS_MAX = 3 * pos_api.ATTEMPTS_MAX
"""A sale's connections: the charge's attempts, the order query's, the re-sent charge's."""
MORE_FAULTS_P = 0.5
"""After a charge's first faulted connection, the chance that the next one faults too."""
REPLAYED_P = 0.1
REFUND_P = 0.25
WAIT = ConfirmWait(wait_s=2.0, poll_s=0.5)
"""No sale here needs the customer's confirmation; bounded in case one does."""


KINDS: dict[str, Callable[[random.Random], Step]] = {
    "drop_request": lambda _rng: Step(Fault.DROP_REQUEST),
    "drop_response": lambda _rng: Step(Fault.DROP_RESPONSE),
    "cut_status": lambda rng: Step(Fault.CUT_RESPONSE, region=Region.STATUS, at=rng.random()),
    "cut_headers": lambda rng: Step(Fault.CUT_RESPONSE, region=Region.HEADERS, at=rng.random()),
    "cut_body": lambda rng: Step(Fault.CUT_RESPONSE, region=Region.BODY, at=rng.random()),
    "reset_response": lambda rng: Step(
        Fault.RESET_RESPONSE, region=rng.choice(list(Region)), at=rng.random()
    ),
    "delay_within": lambda rng: Step(
        Fault.DELAY_RESPONSE, delay_s=rng.uniform(0.02, CLIENT_TIMEOUT_S / 2)
    ),
    "delay_beyond": lambda rng: Step(
        Fault.DELAY_RESPONSE, delay_s=CLIENT_TIMEOUT_S + rng.uniform(0.1, 0.3)
    ),
    "delay_request_within": lambda rng: Step(
        Fault.DELAY_REQUEST, delay_s=rng.uniform(0.02, CLIENT_TIMEOUT_S / 2)
    ),
    "late_request": lambda rng: Step(
        Fault.DELAY_REQUEST, delay_s=CLIENT_TIMEOUT_S + rng.uniform(0.1, 0.3)
    ),
}
FAST_KINDS = ("drop_request", "drop_response", "cut_status", "cut_headers", "cut_body")
"""Faults that cost no waiting: what a sale whose every attempt fails is made of."""


def _step(kind: str, rng: random.Random) -> Step:
    step = KINDS[kind](rng)
    return Step(step.fault, step.delay_s, step.region, step.at, label=kind)


# -- the plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """One sale: what happens to each of its connections, in order (PASS after them)."""

    label: str
    steps: tuple[Step, ...]
    replay_code: bool = False
    """Charge a code already used: the truth is "not paid" (code_replayed)."""
    refund: tuple[Step, ...] | None = None
    """Refund half of it (if it was paid) through these faults."""


def _give_up(rng: random.Random, *, query_fails: bool) -> Planned:
    """Every attempt of the charge faults fast; every attempt of the order query too, if
    `query_fails` (the till gives up: outcome unknown)."""
    count = pos_api.ATTEMPTS_MAX * (2 if query_fails else 1)
    steps = tuple(_step(rng.choice(FAST_KINDS), rng) for _ in range(count))
    return Planned("give_up_unknown" if query_fails else "give_up_queried", steps)


def _late_then_dropped(rng: random.Random) -> Planned:
    """The first attempt is held in a queue past the till's retries, which never get through;
    the order query then runs before the held request does (the till must not call that sale
    "not charged")."""
    late = Step(Fault.DELAY_REQUEST, delay_s=LATE_AFTER_RETRIES_S, label="late_request")
    drops = tuple(_step("drop_request", rng) for _ in range(pos_api.ATTEMPTS_MAX - 1))
    return Planned("late_then_dropped", (late, *drops))


def _random_steps(rng: random.Random) -> tuple[Step, ...]:
    steps = [_step(rng.choice(list(KINDS)), rng)]
    while len(steps) < STEPS_MAX and rng.random() < MORE_FAULTS_P:
        steps.append(_step(rng.choice(list(KINDS)), rng))
    return tuple(steps)


def make_plan(seed: int, full: bool) -> list[Planned]:
    """Every kind twice (the first connection of a sale), sales that give up, refused codes
    under faults and refunds under faults; in FULL, then random sales up to 200 (a first fault
    of any kind, more following at random), more that give up, and late requests outliving
    the retries (SHORT has those in its regression test)."""
    rng = random.Random(seed)
    plan = [Planned(kind, (_step(kind, rng),)) for kind in KINDS for _ in range(2)]
    plan += [_give_up(rng, query_fails=True), _give_up(rng, query_fails=False)]
    for kind in ("drop_response", "cut_body"):
        plan.append(Planned("refund_" + kind, (), refund=(_step(kind, rng),)))
    refund_give_up = tuple(_step(rng.choice(FAST_KINDS), rng) for _ in range(pos_api.ATTEMPTS_MAX))
    plan.append(Planned("refund_give_up", (), refund=refund_give_up))
    if full:
        while len(plan) < 200:
            steps = _random_steps(rng)
            refund = _random_steps(rng) if rng.random() < REFUND_P else None
            plan.append(Planned(steps[0].name, steps, rng.random() < REPLAYED_P, refund))
        plan += [_give_up(rng, query_fails=rng.random() < 0.5) for _ in range(20)]
        plan += [_late_then_dropped(rng) for _ in range(5)]
    rng.shuffle(plan)
    # Last, when earlier sales have paid codes to charge again.
    plan += [Planned("replayed_" + k, (_step(k, rng),), replay_code=True) for k in FAST_KINDS[1:3]]
    return plan


# -- the checkout ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fast_wallets(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_keystore(monkeypatch)


@dataclass
class Checkout:
    """A merchant's till reaching the server through the proxy, a customer, and the books."""

    server: LiveServer
    proxy: FaultProxy
    customer: str
    wallet: Wallet
    pos: TerminalClient
    """Through the proxy, short timeout, scaled back-off."""
    clean: TerminalClient
    """Straight to the server: the later query an operator makes."""
    merchant_id: str
    till: Till
    expected_minor: int
    """What the customer's balance must be, from the payments the database shows."""
    merchant_minor: int = 0
    paid_codes: list[str] = field(default_factory=list)
    """Codes the database shows paid: charged again, they must be refused."""

    def payments_of(self, order_id: str) -> list[tuple[str, str, int]]:
        with self.server.session() as session:
            rows = session.execute(
                select(Payment.id, Payment.status, Payment.amount_minor).where(
                    Payment.merchant_id == self.merchant_id,
                    Payment.merchant_order_id == order_id,
                )
            ).all()
        return [(row.id, row.status, row.amount_minor) for row in rows]

    def refunds_of(self, payment_id: str) -> tuple[list[tuple[str, int]], int]:
        with self.server.session() as session:
            rows = session.execute(
                select(Refund.id, Refund.amount_minor).where(Refund.payment_id == payment_id)
            ).all()
            payment = session.get(Payment, payment_id)
            assert payment is not None
            return [(row.id, row.amount_minor) for row in rows], payment.refunded_minor


@pytest.fixture
def checkout(live_postgres: LiveServer, tmp_path: Path) -> Iterator[Checkout]:
    """A fresh customer and merchant (the one shop builder) on the module's live `serve` on
    PostgreSQL, the merchant's till behind a fault proxy of its own."""
    server = live_postgres
    name, wallet = customer(server, tmp_path / "phone", TOP_UP)
    merchant = new_merchant(server)
    with fault_proxy(server.url) as proxy:
        pos = merchant.till_at(
            proxy.url,
            timeout_s=CLIENT_TIMEOUT_S,
            sleep=lambda seconds: time.sleep(seconds * BACKOFF_SCALE),
        )
        clean = merchant.till_at(server.url)
        till = Till(server.url, merchant.key_id, merchant.secret)
        start = books(server, name).balance_minor
        yield Checkout(server, proxy, name, wallet, pos, clean, merchant.merchant_id, till, start)


# -- one sale, judged -----------------------------------------------------------------------


@dataclass
class Tally:
    sales: Counter[str] = field(default_factory=Counter)
    """How sales ended: paid, not_paid (with the code), outcome_unknown."""
    faults: Counter[str] = field(default_factory=Counter)
    """Faults actually applied, by kind."""
    connections: int = 0
    gave_up: int = 0
    later_query_truthful: int = 0
    refunds: Counter[str] = field(default_factory=Counter)


def _apply(
    checkout: Checkout, steps: tuple[Step, ...], tally: Tally, figures: Figures
) -> Callable[[], None]:
    """Script the proxy; returns the call that counts what it did, after waiting until no
    request of the sale can still reach the server (one held back, or one the till stopped
    waiting for): until then the sale's truth is not settled. An answer still held back needs
    no wait: the server's work is done."""
    checkout.proxy.script(steps)
    first = checkout.proxy.accepted

    def settle() -> None:
        if not checkout.proxy.wait_settled(first):
            figures.anomaly("the proxy did not settle")
        records = checkout.proxy.records_since(first)
        tally.connections += len(records)
        figures.operations += len(records)
        for record in records:
            if record.step.fault != Fault.PASS:
                tally.faults[record.step.name] += 1
                figures.faults += 1

    return settle


def run_sale(
    checkout: Checkout, planned: Planned, tally: Tally, figures: Figures, rng: random.Random
) -> None:
    """One sale through the planned faults, then its outcome against the database."""
    amount_minor = rng.randint(2, 500)
    sale = Sale(f"{amount_minor // 100}.{amount_minor % 100:02d}", "CNY")
    replay = planned.replay_code and bool(checkout.paid_codes)
    code = rng.choice(checkout.paid_codes) if replay else code_of(checkout.wallet, "v2")
    where = f"sale {planned.label} order {sale.order_id}"
    settle = _apply(checkout, planned.steps, tally, figures)
    outcome: SaleOutcome | None = None
    try:
        outcome = charge_code(checkout.pos, code, sale, WAIT)
    except Exception as error:  # the till must answer, never raise: recorded
        figures.anomaly(f"{where}: charge_code raised {type(error).__name__}: {error}")
    settle()
    figures.runs += 1
    truth = checkout.payments_of(sale.order_id)
    paid = [row for row in truth if row[1] == "succeeded"]
    if len(truth) > 1:
        figures.anomaly(f"{where}: {len(truth)} payments for one order: {truth}")
    if replay and paid:
        figures.anomaly(f"{where}: a used code paid again: {paid}")
    if outcome is not None:
        _judge(checkout, where, sale, outcome, paid, tally, figures)
    if paid:
        checkout.paid_codes.append(code)
        checkout.expected_minor -= sum(row[2] for row in paid)
        checkout.merchant_minor += sum(row[2] for row in paid)
    _check_books(checkout, where, figures)
    if planned.refund is not None and len(paid) == 1:
        run_refund(checkout, paid[0], planned.refund, tally, figures)


def _judge(
    checkout: Checkout,
    where: str,
    sale: Sale,
    outcome: SaleOutcome,
    paid: list[tuple[str, str, int]],
    tally: Tally,
    figures: Figures,
) -> None:
    if outcome.code == "outcome_unknown":
        tally.sales["outcome_unknown"] += 1
        tally.gave_up += 1
        if sale.order_id not in outcome.message or outcome.headline != "OUTCOME UNKNOWN":
            figures.anomaly(
                f"{where}: giving up is not clear: {outcome.headline} {outcome.message}"
            )
        later = checkout.clean.payments_by_order(sale.order_id)
        later_paid = [p["payment_id"] for p in later if p.get("status") == "succeeded"]
        if later_paid != [row[0] for row in paid]:
            figures.anomaly(f"{where}: later query says paid {later_paid}, database {paid}")
        else:
            tally.later_query_truthful += 1
        return
    tally.sales["paid" if outcome.paid else f"not_paid ({outcome.code})"] += 1
    if outcome.paid != bool(paid):
        figures.anomaly(
            f"{where}: till says {outcome.headline} ({outcome.code}), database paid={paid}"
        )
    elif outcome.paid and (outcome.payment or {}).get("payment_id") != paid[0][0]:
        figures.anomaly(f"{where}: till's payment {outcome.payment} is not {paid[0][0]}")


def _check_books(checkout: Checkout, where: str, figures: Figures) -> None:
    now = books(checkout.server, checkout.customer)
    if now.balance_minor != checkout.expected_minor:
        figures.anomaly(
            f"{where}: customer balance {now.balance_minor}, expected {checkout.expected_minor}"
        )
        checkout.expected_minor = now.balance_minor  # one anomaly per fault, not one per sale after
    if now.balance_minor != now.entries_minor:
        figures.anomaly(f"{where}: balance {now.balance_minor} != entries {now.entries_minor}")
    credited = merchant_balance(checkout.server, checkout.till)
    if credited != checkout.merchant_minor:
        figures.anomaly(f"{where}: merchant balance {credited}, expected {checkout.merchant_minor}")
        checkout.merchant_minor = credited


def run_refund(
    checkout: Checkout,
    payment: tuple[str, str, int],
    steps: tuple[Step, ...],
    tally: Tally,
    figures: Figures,
) -> None:
    """Refund half of a paid sale through `steps`: it happens once, whatever the till heard;
    a till that gave up retries later with the same key and gets the same refund."""
    payment_id, _, amount_minor = payment
    half = amount_minor // 2
    amount = f"{half // 100}.{half % 100:02d}"
    key = str(uuid.uuid4())
    where = f"refund of {payment_id}"
    settle = _apply(checkout, steps, tally, figures)
    reply: dict[str, Any] | None = None
    try:
        reply = checkout.pos.refund(payment_id, amount=amount, idempotency_key=key)
        tally.refunds["answered"] += 1
    except ServerUnreachable:
        tally.refunds["gave_up"] += 1
    except ServerRejected as error:
        figures.anomaly(f"{where}: refused {error.code} {error.message}")
    except Exception as error:  # the client must answer or give up: recorded
        figures.anomaly(f"{where}: refund raised {type(error).__name__}: {error}")
    settle()
    figures.runs += 1
    if reply is None:
        reply = checkout.clean.refund(payment_id, amount=amount, idempotency_key=key)
    rows, refunded_minor = checkout.refunds_of(payment_id)
    if len(rows) != 1 or rows[0][1] != half or refunded_minor != half:
        figures.anomaly(f"{where}: refunds {rows}, refunded {refunded_minor}, not one of {half}")
    elif reply.get("refund_id") != rows[0][0]:
        figures.anomaly(f"{where}: till's refund {reply} is not {rows[0][0]}")
    again = checkout.clean.refund(payment_id, amount=amount, idempotency_key=key)
    if (
        again.get("refund_id") != reply.get("refund_id")
        or len(checkout.refunds_of(payment_id)[0]) != 1
    ):
        figures.anomaly(f"{where}: a retry with the key did not replay: {again}")
    checkout.expected_minor += refunded_minor
    checkout.merchant_minor -= refunded_minor
    _check_books(checkout, where, figures)


# -- the tests ------------------------------------------------------------------------------


def test_charges_and_refunds_under_seeded_network_faults(
    checkout: Checkout, figures: Figures, seed: int, scale: Scale
) -> None:
    figures.section = SECTION
    figures.seed = seed
    plan = make_plan(seed, scale.full)
    rng = random.Random(seed + 1)
    tally = Tally()
    for planned in plan:
        run_sale(checkout, planned, tally, figures, rng)
    if not checkout.proxy.wait_idle():
        figures.anomaly("the proxy did not go idle")
    if ledger_sum(checkout.server) != 0:
        figures.anomaly("the ledger does not sum to zero")
    missing = set(KINDS) - set(tally.faults)
    if missing:
        figures.anomaly(f"fault kinds never applied: {sorted(missing)}")
    figures.details.update(
        sales=len(plan),
        connections=tally.connections,
        client_timeout_s=CLIENT_TIMEOUT_S,
        faults_by_kind=", ".join(f"{k}: {v}" for k, v in sorted(tally.faults.items())),
        outcomes=", ".join(f"{k}: {v}" for k, v in sorted(tally.sales.items())),
        gave_up=tally.gave_up,
        later_query_truthful=tally.later_query_truthful,
        refunds=", ".join(f"{k}: {v}" for k, v in sorted(tally.refunds.items())),
    )
    assert figures.anomalies == 0, figures.anomaly_notes


def _one_sale(checkout: Checkout, steps: tuple[Step, ...], figures: Figures, label: str) -> None:
    run_sale(checkout, Planned(label, steps), Tally(), figures, random.Random(0))


def test_regression_a_cut_answer_is_not_read_as_a_refusal(
    checkout: Checkout, figures: Figures
) -> None:
    """A 201 whose body (or headers, or status line) was cut: the till read an empty body as a
    failed payment ("NOT PAID" while the server had charged), or crashed on the status line.
    A reply it cannot read is no reply: it retries with the key and hears the stored answer."""
    figures.section = SECTION
    for region in Region:
        for at in (0.0, 0.5, 0.99):
            step = Step(Fault.CUT_RESPONSE, region=region, at=at, label=f"cut_{region}")
            _one_sale(checkout, (step,), figures, step.name)
    assert figures.anomalies == 0, figures.anomaly_notes


def test_regression_a_late_request_is_not_called_not_charged(
    checkout: Checkout, figures: Figures
) -> None:
    """Every attempt failed, the order query found nothing, and the till said "not charged":
    but the first attempt was only held up, and the server ran it after the query. The till
    now settles by sending the same charge (same key) again: whichever copy runs first, the
    other replays it, and the till hears the truth."""
    figures.section = SECTION
    _one_sale(checkout, _late_then_dropped(random.Random(1)).steps, figures, "late_then_dropped")
    assert figures.anomalies == 0, figures.anomaly_notes
