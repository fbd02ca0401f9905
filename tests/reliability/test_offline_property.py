"""Offline payments under random interleavings (docs/offline.md §8, third row; §7 bounds).

A hypothesis state machine over real parts on one in-process server: wallets take allowances,
get cloned, make v4 codes that real tills accept with their line down, tills lose power
mid-write and recover, sync, charge v4 codes online, wallets hand allowances back and the
sweep returns escrow. After every step the books must hold: the ledger sums to zero and
reconcile is clean; no (merchant, certificate, counter) is claimed twice, no payment is made
twice; every escrow pays out at most what was funded and never goes below zero; the loss of
each allowance stays within c (k V - b) with b = 0, and is zero for one that was never cloned
nor replayed (bar acceptances a till synced only after the sweep: `late`); each user's money
is conserved; a till never acknowledges one code twice.

The server runs with small offline settings so examples reach the limits: two ladder steps,
three codes a certificate, a floor below the per-payment cap, a small till total.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import update

from paycode.client import offline, offline_calls
from paycode.merchant_pos import offline_keys, offline_sync
from paycode.merchant_pos.offline_records import Acceptance
from paycode.merchant_pos.offline_sale import SPLIT_WINDOW_S, OfflineRequest, decide
from paycode.merchant_pos.till import new_order_id
from paycode.server.database.offline_models import OfflineAllowance
from paycode.server.operations import purge
from paycode.server.safety.offline_settings import OfflineSettings
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ServerRejected, WalletError
from tests.reliability.figures import Scale
from tests.support.books import assert_books_clean
from tests.support.offline_world import (
    PIN,
    Phone,
    Till,
    acceptance_row,
    allowance_books,
    claims_twice,
    cloned_phone,
    device_revoked,
    enrolled_phone,
    escrow_accounts_negative,
    loss_bound_minor,
    open_till,
    payments_not_one_to_one,
    reopen_log,
    users_books,
)
from tests.support.servers import BACKEND_PARAMS, Server, started
from tests.support.shop import new_merchant, new_terminal, use_fast_keystore

ENV = {
    "PAYCODE_OFFLINE_ALLOWANCES_MINOR": "120,400",
    "PAYCODE_OFFLINE_COUNT": "3",
    "PAYCODE_OFFLINE_PAYMENT_MAX_MINOR": "60",
    "PAYCODE_OFFLINE_FLOOR_MINOR": "50",
    "PAYCODE_OFFLINE_TILL_TOTAL_MINOR": "300",
    "PAYCODE_OFFLINE_PER_DAY": "100",
}
SETTINGS = OfflineSettings.parse(ENV)
TOP_UP = "30.00"
TOP_UP_MINOR = 3000
USERS = 2
EXAMPLES = {"sqlite": 6, "postgres": 3}
"""Worlds per run inside `make test`; `make reliability` (PAYCODE_RELIABILITY=full) explores
EXAMPLES_FULL: each world is a few seconds of real calls."""
EXAMPLES_FULL = {"sqlite": 60, "postgres": 30}
STEPS = 50
TORN_LINES = (b"", b'{"amount_minor":12,"at_s":17', b'{"amount_minor":12,"at_s":1700000000,"ce')

TAKE_REFUSALS = {
    ErrorCode.OFFLINE_ALLOWANCE_LIVE,  # one live allowance a user
    ErrorCode.OFFLINE_BLOCKED,  # the user's allowance was over-spent
    ErrorCode.DEVICE_REVOKED,  # the device was locked for it
    ErrorCode.INSUFFICIENT_FUNDS,
}
CODE_REFUSALS = {
    ErrorCode.OFFLINE_NONE,
    ErrorCode.OFFLINE_EXHAUSTED,
    ErrorCode.LIMIT_EXCEEDED,
}
SALE_REFUSALS = {
    ErrorCode.OFFLINE_LIMIT,
    ErrorCode.SPLIT_SALE,
    ErrorCode.OFFLINE_TILL_FULL,
    ErrorCode.CODE_REPLAYED,
    ErrorCode.CERTIFICATE_RETURNED,  # denied in the keys copy fetched at the last sync
}
ONLINE_REFUSALS = {
    ErrorCode.CODE_REPLAYED,
    ErrorCode.CERTIFICATE_RETURNED,
    ErrorCode.OFFLINE_BLOCKED,
    ErrorCode.INSUFFICIENT_FUNDS,
    ErrorCode.LIMIT_EXCEEDED,
}
HAND_BACK_REFUSALS = {ErrorCode.ALLOWANCE_NOT_LIVE, ErrorCode.DEVICE_REVOKED}


@pytest.fixture(scope="module", params=BACKEND_PARAMS)
def offline_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with started(request.param, "in_process", extra_env=ENV) as server:
        yield server


class OfflineWorld(RuleBasedStateMachine):
    server: Server
    labels: Counter[str]

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="offline-world-"))
        self.now_s = time.time()
        """The world's clock: wallets and tills read it; it runs ahead of the server's."""
        self.phones = [
            enrolled_phone(self.server, self.root / f"phone-{n}", TOP_UP) for n in range(USERS)
        ]
        self.user_ids = [phone.user_id for phone in self.phones]
        first = new_merchant(self.server, "Noodles")
        merchants = [first, new_terminal(self.server, first), new_merchant(self.server, "Tea")]
        self.tills: list[Till] = [
            open_till(m, self.root / f"till-{n}", local_now_s=self.now_s)
            for n, m in enumerate(merchants)
        ]
        self.merchant_ids = sorted({m.merchant_id for m in merchants})
        self.floor_minor = SETTINGS.floor_minor
        self.exposed: set[str] = set()
        """Allowances held by two wallets or whose code was shown again: loss is allowed."""
        self.last_code: tuple[str, int, str] | None = None
        """(code, amount, allowance) of the last code a till saw."""
        self.labels["examples"] += 1

    def teardown(self) -> None:
        for till in self.tills:
            till.stack.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------

    def phone(self, index: int) -> Phone:
        return self.phones[index % len(self.phones)]

    def till(self, index: int) -> Till:
        return self.tills[index % len(self.tills)]

    def held_by_two(self) -> None:
        """An allowance in more than one wallet's keystore is exposed (cloned)."""
        seen: dict[str, int] = {}
        for phone in self.phones:
            for allowance in offline.allowances(phone.wallet):
                if any(held.seed is not None for held in allowance.certificates):
                    seen[allowance.allowance_id] = seen.get(allowance.allowance_id, 0) + 1
        self.exposed |= {allowance_id for allowance_id, count in seen.items() if count > 1}

    def refused_fairly(
        self, phone: Phone, refused: ServerRejected, allowed: set[ErrorCode]
    ) -> None:
        """A wallet call refused: for one of `allowed` reasons, or because its device was
        locked (the signature check answers `unauthorized`, naming no reason)."""
        if refused.code == ErrorCode.UNAUTHORIZED:
            assert device_revoked(self.server, phone), refused
            return
        assert refused.code in allowed, refused

    def present(self, till: Till, code: str, amount_minor: int, *, replayed: bool = False) -> None:
        """The till, line down, decides the sale; PAID OFFLINE never twice for one code."""
        request = OfflineRequest(
            code, amount_minor, "CNY", new_order_id(),
            till.keys.server_time(self.now_s), self.now_s,
        )  # fmt: skip
        decision = decide(request, till.keys, till.log)
        if isinstance(decision, Acceptance):
            assert code not in till.acknowledged, "the till acknowledged one code twice"
            till.acknowledged.add(code)
            self.labels["sale accepted"] += 1
            return
        # A code shown again may have outlived its window (made online, or before a wait).
        allowed = SALE_REFUSALS | ({ErrorCode.CODE_EXPIRED} if replayed else set())
        assert decision.code in allowed, decision
        self.labels[f"sale {decision.code}"] += 1

    # -- rules ---------------------------------------------------------------------------

    @initialize(amounts_minor=st.lists(st.sampled_from(SETTINGS.allowances_minor), min_size=USERS))
    def everyone_takes(self, amounts_minor: list[int]) -> None:
        """Each phone starts with an allowance: most steps then have something to spend."""
        for phone, amount_minor in zip(self.phones, amounts_minor, strict=False):
            offline_calls.take(phone.wallet, amount_minor=amount_minor, currency="CNY", pin=PIN)
        self.labels["take"] += USERS

    @rule(phone=st.integers(0, 7), amount_minor=st.sampled_from(SETTINGS.allowances_minor))
    def take(self, phone: int, amount_minor: int) -> None:
        held = self.phone(phone)
        if offline.live_allowances(held.wallet, local_now_s=self.now_s):
            # Its owner would spend it first; the server's refusal costs a PIN hash (~0.1 s).
            self.labels["take skipped"] += 1
            return
        try:
            offline_calls.take(held.wallet, amount_minor=amount_minor, currency="CNY", pin=PIN)
        except ServerRejected as refused:
            self.refused_fairly(held, refused, TAKE_REFUSALS)
            self.labels[f"take {refused.code}"] += 1
            return
        self.labels["take"] += 1

    @precondition(lambda self: len(self.phones) < 5)
    @rule(phone=st.integers(0, 7))
    def clone(self, phone: int) -> None:
        index = phone % len(self.phones)
        home = self.root / f"clone-{len(self.phones)}"
        self.phones.append(cloned_phone(self.phones[index], index, home))
        self.held_by_two()
        self.labels["clone"] += 1

    @rule(
        phone=st.integers(0, 7),
        till=st.integers(0, 5),
        amounts_minor=st.lists(st.integers(1, 70), min_size=1, max_size=3),
        typed=st.booleans(),
    )
    def sell_offline(self, phone: int, till: int, amounts_minor: list[int], typed: bool) -> None:
        """One customer's sales at one till, a little over the split-sale window apart."""
        for amount_minor in amounts_minor:
            self.now_s += SPLIT_WINDOW_S + 1
            if not self.sell_one(self.phone(phone), self.till(till), amount_minor, typed):
                return

    def sell_one(self, held: Phone, till: Till, amount_minor: int, typed: bool) -> bool:
        """One sale with a fresh code of `held`; False when the wallet could make none."""
        try:
            made = offline.next_offline_code(
                held.wallet, local_now_s=self.now_s, amount_minor=amount_minor if typed else None
            )
        except WalletError as refused:
            assert refused.code in CODE_REFUSALS, refused
            self.labels[f"code {refused.code}"] += 1
            return False
        self.held_by_two()
        self.last_code = (made.code.text, amount_minor, made.allowance_id)
        self.present(till, made.code.text, amount_minor)
        return True

    @precondition(lambda self: any(phone.clone_of is not None for phone in self.phones))
    @rule(clone=st.integers(0, 7), rounds=st.integers(2, 6), amount_minor=st.integers(20, 50))
    def double_spend(self, clone: int, rounds: int, amount_minor: int) -> None:
        """The attack of §7: a clone and the wallet it copied spend the same certificates at
        the same time, at tills of different merchants, whose lines are down."""
        copies = [phone for phone in self.phones if phone.clone_of is not None]
        copy = copies[clone % len(copies)]
        assert copy.clone_of is not None
        pair = ((self.phones[copy.clone_of], self.tills[0]), (copy, self.tills[2]))
        for _ in range(rounds):
            self.now_s += SPLIT_WINDOW_S + 1
            for held, till in pair:
                self.sell_one(held, till, amount_minor, typed=True)
        self.labels["double spend"] += 1

    @precondition(lambda self: self.last_code is not None)
    @rule(till=st.integers(0, 5))
    def replay(self, till: int) -> None:
        """The last code shown again (a relayed or re-scanned code), at any till."""
        assert self.last_code is not None
        code, amount_minor, allowance_id = self.last_code
        before = sum(len(t.acknowledged) for t in self.tills)
        self.present(self.till(till), code, amount_minor, replayed=True)
        if sum(len(t.acknowledged) for t in self.tills) > before:
            self.exposed.add(allowance_id)
            self.labels["replay accepted"] += 1

    @rule(seconds=st.sampled_from([10, 121, 600]))
    def wait(self, seconds: int) -> None:
        self.now_s += seconds

    @rule(till=st.integers(0, 5), torn=st.sampled_from(TORN_LINES))
    def crash(self, till: int, torn: bytes) -> None:
        chosen = self.till(till)
        unsynced = [a.id for a in chosen.log.unsynced()]
        assert reopen_log(chosen, torn) == len(torn)
        assert [a.id for a in chosen.log.unsynced()] == unsynced, "an acknowledged sale lost"
        self.labels["crash torn" if torn else "crash"] += 1

    @rule(till=st.integers(0, 5), every=st.booleans())
    def sync(self, till: int, every: bool) -> None:
        """A till's line comes back (or every till's): its log goes to the server, whose
        answers it stores, then it fetches keys (and the denied certificates) again."""
        for chosen in self.tills if every else [self.till(till)]:
            outcome = offline_sync.sync(
                chosen.client, chosen.log, chosen.home, now_s=self.now_s, force=True
            )
            assert outcome.stopped_at is None and outcome.left == 0, outcome.why
            for settled in outcome.settled:
                self.labels[f"settled {settled.synced.result}"] += 1
                row = acceptance_row(self.server, settled.record.id)
                answer = (row.result, row.paid_minor, row.loss_minor)
                assert answer == (settled.synced.result, settled.synced.paid_minor,
                                  settled.synced.loss_minor), (row, settled)  # fmt: skip
            chosen.keys = offline_keys.fetch(chosen.client, chosen.home, local_now_s=self.now_s)

    @rule(phone=st.integers(0, 7), till=st.integers(0, 5), amount_minor=st.integers(1, 70))
    def online_charge(self, phone: int, till: int, amount_minor: int) -> None:
        """A v4 code at a till whose line is up: paid in full from escrow, or refused."""
        held, chosen = self.phone(phone), self.till(till)
        try:
            made = offline.next_offline_code(
                held.wallet, local_now_s=time.time(), amount_minor=amount_minor
            )
        except WalletError as refused:
            assert refused.code in CODE_REFUSALS, refused
            return
        self.held_by_two()
        self.last_code = (made.code.text, amount_minor, made.allowance_id)
        amount = f"{amount_minor // 100}.{amount_minor % 100:02d}"
        try:
            paid = chosen.client.charge(code=made.code.text, amount=amount, currency="CNY")
        except ServerRejected as refused:
            assert refused.code in ONLINE_REFUSALS, refused
            self.labels[f"online {refused.code}"] += 1
            return
        assert paid["status"] == "succeeded" and paid["amount"] == amount, paid
        row = acceptance_row(self.server, paid["payment_id"])
        assert (row.result, row.paid_minor, row.loss_minor, row.seq) == (
            "paid", amount_minor, 0, None,
        ), row  # fmt: skip
        self.labels["online paid"] += 1

    @rule(phone=st.integers(0, 7))
    def hand_back(self, phone: int) -> None:
        held = self.phone(phone)
        try:
            offline_calls.hand_back(held.wallet)
        except WalletError as refused:
            assert refused.code == ErrorCode.OFFLINE_NONE, refused
            return
        except ServerRejected as refused:
            self.refused_fairly(held, refused, HAND_BACK_REFUSALS)
            self.labels[f"hand back {refused.code}"] += 1
            return
        self.labels["hand back"] += 1

    @rule(user=st.integers(0, USERS - 1))
    def sweep(self, user: int) -> None:
        """The allowance's returns_at_s comes (moved into the past) and the sweep runs."""
        (books,) = users_books(self.server, [self.user_ids[user]])
        ids = [allowance.allowance_id for allowance in books.allowances]
        if not ids:
            return
        now_s = time.time()
        with self.server.session() as session:
            session.execute(
                update(OfflineAllowance)
                .where(OfflineAllowance.id == ids[-1], OfflineAllowance.state != "swept")
                .values(returns_at_s=now_s - 1)
            )
        with self.server.session() as session:
            swept = purge.sweep_allowances(session, now_s)
        self.labels["swept"] += len(swept)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def books_balance(self) -> None:
        assert_books_clean(self.server)

    @invariant()
    def no_code_claimed_or_paid_twice(self) -> None:
        assert claims_twice(self.server, self.merchant_ids) == []
        users = users_books(self.server, self.user_ids)
        ids = [allowance.allowance_id for user in users for allowance in user.allowances]
        assert payments_not_one_to_one(self.server, ids) == []
        assert escrow_accounts_negative(self.server) == 0

    @invariant()
    def escrows_and_losses_within_bounds(self) -> None:
        for user in users_books(self.server, self.user_ids):
            for books in user.allowances:
                assert books.escrow_minor >= 0, books
                assert books.paid_minor + books.returned_minor <= books.amount_minor, books
                assert (
                    books.paid_minor + books.returned_minor + books.escrow_minor
                    == books.amount_minor
                ), books
                bound = loss_bound_minor(
                    SETTINGS, books.amount_minor, self.floor_minor, books.offline_tills
                )
                assert books.loss_minor <= bound, (books, bound)
                if books.allowance_id not in self.exposed:
                    assert books.honest_loss_minor == 0, books
            # Money conserved per user: what left their account sits in escrow or was paid.
            escrow_minor = sum(books.escrow_minor for books in user.allowances)
            received_minor = sum(books.paid_minor for books in user.allowances)
            assert user.balance_minor + escrow_minor + received_minor == TOP_UP_MINOR, user

    @invariant()
    def tills_log_each_code_once(self) -> None:
        for till in self.tills:
            codes = [a.code for a in till.log.unsynced()]
            assert len(codes) == len(set(codes))


def test_offline_world(
    offline_server: Server, monkeypatch: pytest.MonkeyPatch, scale: Scale
) -> None:
    use_fast_keystore(monkeypatch)
    labels: Counter[str] = Counter()
    OfflineWorld.server, OfflineWorld.labels = offline_server, labels
    shrink = os.environ.get("PAYCODE_OFFLINE_WORLD_SHRINK")
    started_s = time.monotonic()
    run_state_machine_as_test(
        OfflineWorld,
        settings=settings(
            max_examples=scale.pick(
                short=EXAMPLES[offline_server.backend], full=EXAMPLES_FULL[offline_server.backend]
            ),
            stateful_step_count=STEPS,
            deadline=None,
            database=None,
            # Six worlds drawn at random sometimes hold no offline sale at all, and the check
            # below (the run exercised sales) then fails by chance: the short run replays the
            # worlds CI=true's derandomized profile draws; `make reliability` draws new ones.
            derandomize=not scale.full,
            # Shrinking replays whole worlds (seconds each): the unshrunk steps are reported.
            phases=tuple(Phase) if shrink else (Phase.explicit, Phase.generate),
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    print(f"{dict(labels)} in {time.monotonic() - started_s:.1f} s")
    assert labels["sale accepted"] and labels["take"], dict(labels)


def test_online_v4_charge_above_the_floor_is_limit_exceeded_not_code_invalid(
    offline_server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Found by test_offline_world: a genuine code for more than the merchant's floor (here
    55 > F = 50, within p = 60) was refused online as `code_invalid`, "not genuine here: show
    a fresh one", which no fresh code could pass. It is `limit_exceeded`; nothing moves."""
    use_fast_keystore(monkeypatch)
    phone = enrolled_phone(offline_server, tmp_path / "phone", TOP_UP)
    taken = offline_calls.take(phone.wallet, amount_minor=400, currency="CNY", pin=PIN)
    till = new_merchant(offline_server, "Floor").till
    made = offline.next_offline_code(phone.wallet, local_now_s=time.time(), amount_minor=55)
    with pytest.raises(ServerRejected) as refused:
        till.charge(code=made.code.text, amount="0.55", currency="CNY")
    assert refused.value.code == ErrorCode.LIMIT_EXCEEDED, refused.value
    assert "0.50" in refused.value.message
    books = allowance_books(offline_server, taken.allowance.allowance_id)
    assert (books.escrow_minor, books.paid_minor) == (400, 0)
    made = offline.next_offline_code(phone.wallet, local_now_s=time.time(), amount_minor=50)
    paid = till.charge(code=made.code.text, amount="0.50", currency="CNY")
    assert paid["status"] == "succeeded"
