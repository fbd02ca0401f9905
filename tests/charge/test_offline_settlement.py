"""Settling offline acceptances (docs/offline.md §6): each result of §6.2, the till's hash
chain, retries, races between tills and merchants, over-spend, loss and the lock, on SQLite and
PostgreSQL. Allowances are funded with `escrow.fund_allowance` over fresh Ed25519 keys this
test holds (the wallet's role); codes are signed with the shared offline functions; a till's
records are written as the till's log writes them (merchant_pos offline_records), so the
server's rebuilt chain is checked against the till's own bytes.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.registry import REGISTRY
from sqlalchemy import select
from sqlalchemy.orm import Session

from paycode.merchant_pos import offline_records
from paycode.server.books import (
    escrow,
    offline_settlement,
    reconcile,
    settlement,
    settlement_csv,
)
from paycode.server.books.offline_chain import AcceptanceRecord, ChainOutOfOrder, record_gap
from paycode.server.books.offline_settlement import Settled, book_loss, settle_acceptance
from paycode.server.config import ServerConfig
from paycode.server.database.models import SYSTEM, Device, Merchant, Payment, User
from paycode.server.database.offline_models import (
    ESCROW,
    LOSS,
    SHORTFALL_OWNER,
    OfflineAcceptance,
    OfflineAllowance,
    OfflineCertificate,
)
from paycode.server.operations import metrics
from paycode.server.safety.offline_keys import load_offline_keys
from paycode.server.safety.offline_settings import OfflineSettings
from paycode.server.safety.secretbox import SecretBox
from paycode.server.testing import Server
from paycode.shared import terminal_auth
from paycode.shared.binding import MerchantBinding
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError, CodeMalformed, ServerRejected
from paycode.shared.offline import PaymentFields, parse_certificate, sign_payment
from paycode.shared.timestep import step_at
from paycode.shared.versions import v4_offline
from paycode.shared.versions.base import BOUND_FLAG
from tests.support.books import assert_books_clean, balances
from tests.support.servers import all_at_once
from tests.support.shop import (
    bank_devices,
    bank_user,
    new_merchant,
    new_terminal,
    ok_json,
)

SETTINGS = OfflineSettings()


@dataclass
class OfflineWallet:
    """What a wallet holds after `offline take`: four certificates and their seeds."""

    allowance_id: str
    user_id: str
    device_id: str
    certificates: list[bytes]
    seeds: list[bytes] = field(repr=False)

    def code(
        self, index: int, counter: int, *, limit_minor: int, at_s: float, bound_to: str = ""
    ) -> str:
        certificate = parse_certificate(self.certificates[index])
        binding = MerchantBinding(bound_to).digest if bound_to else b""
        payment = PaymentFields(counter, step_at(at_s), limit_minor, BOUND_FLAG if binding else 0)
        signed = sign_payment(certificate, payment, self.seeds[index], binding)
        return v4_offline.encode(signed)

    def cert_id(self, index: int) -> str:
        return parse_certificate(self.certificates[index]).fields.cert_id.hex()


@dataclass
class Till:
    """One terminal's offline log, kept as the till keeps it: seq and the hash of its last line."""

    terminal_id: str
    merchant_id: str
    seq: int = 0
    last_hash: str = offline_records.GENESIS_HASH

    def record(
        self, code: str, amount_minor: int, *, at_s: float, order: str = ""
    ) -> AcceptanceRecord:
        try:
            parsed = v4_offline.parse(code)
            cert, counter = parsed.certificate.fields.cert_id.hex(), parsed.payment.counter
        except CodeMalformed:  # a broken till logs what it could not have checked
            cert, counter = "0" * 32, 0
        accept = offline_records.Acceptance(
            id=offline_records.new_acceptance_id(),
            seq=self.seq + 1,
            prev=self.last_hash,
            order=order or f"order-{os.urandom(4).hex()}",
            cert=cert,
            counter=counter,
            code=code,
            amount_minor=amount_minor,
            currency="CNY",
            at_s=int(at_s),
        )
        self.seq += 1
        self.last_hash = offline_records.chain_hash(offline_records.encode(accept.fields()))
        return AcceptanceRecord(
            id=accept.id,
            seq=accept.seq,
            prev=accept.prev,
            code=code,
            amount_minor=amount_minor,
            currency="CNY",
            merchant_order_id=accept.order,
            at_s=accept.at_s,
        )


def _box(server: Server) -> SecretBox:
    return SecretBox.from_config(ServerConfig.from_env(server.env))


def fund(server: Server, amount_minor: int = 4000, balance_minor: int = 100_000) -> OfflineWallet:
    user_id = bank_user(server, balance_minor)
    device_id = next(iter(bank_devices(server, user_id)))
    seeds = [os.urandom(32) for _ in range(4)]
    public_keys = [
        Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw() for seed in seeds
    ]
    now_s = time.time()
    config = ServerConfig.from_env(server.env)
    with server.session() as session:
        user = session.get(User, user_id)
        assert user is not None
        keys = load_offline_keys(session, _box(server), now_s=now_s, publish_s=0)
        issued = escrow.fund_allowance(
            session,
            user=user,
            device_id=device_id,
            currency="CNY",
            amount_minor=amount_minor,
            public_keys=public_keys,
            keys=keys,
            settings=SETTINGS,
            days=config.limits,
            now_s=now_s,
        )
    return OfflineWallet(issued.allowance_id, user_id, device_id, list(issued.certificates), seeds)


def till_of(server: Server, merchant: Any = None) -> Till:
    found = new_terminal(server, merchant) if merchant else new_merchant(server, "Offline")
    return Till(found.key_id, found.merchant_id)


def settle(
    server: Server, till: Till, record: AcceptanceRecord, now_s: float | None = None
) -> Settled:
    at_s = time.time() if now_s is None else now_s
    with server.session() as session:
        merchant = session.get(Merchant, till.merchant_id)
        assert merchant is not None
        keys = load_offline_keys(session, _box(server), now_s=at_s, publish_s=0)
        return settle_acceptance(
            session,
            terminal_id=till.terminal_id,
            merchant=merchant,
            record=record,
            keys=keys,
            settings=SETTINGS,
            now_s=at_s,
        )


def changed(
    before: dict[tuple[str, str], int], after: dict[tuple[str, str], int]
) -> dict[tuple[str, str], int]:
    return {
        key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)
    }


# -- each result --------------------------------------------------------------------------------


def test_an_honest_acceptance_is_paid_from_escrow_and_a_retry_moves_nothing(server: Server) -> None:
    wallet, till, now_s = fund(server), till_of(server), time.time()
    record = till.record(wallet.code(0, 0, limit_minor=1000, at_s=now_s), 750, at_s=now_s)
    before = balances(server)
    settled = settle(server, till, record)
    assert (settled.result, settled.paid_minor, settled.loss_minor) == ("paid", 750, 0)
    after = balances(server)
    assert changed(before, after) == {
        (ESCROW, wallet.allowance_id): -750,
        ("merchant", till.merchant_id): 750,
    }
    with server.session() as session:
        payment = session.get(Payment, settled.payment_id)
        assert payment is not None
        assert (payment.code_version, payment.allowance_id, payment.user_id) == (
            "v4",
            wallet.allowance_id,
            wallet.user_id,
        )
        assert (payment.amount_minor, payment.status, payment.terminal_id) == (
            750,
            "succeeded",
            till.terminal_id,
        )
        assert payment.merchant_order_id == record.merchant_order_id
    again = settle(server, till, record)
    assert again.replayed and (again.result, again.payment_id) == ("paid", settled.payment_id)
    assert balances(server) == after
    assert_books_clean(server)


def test_a_merchant_bound_code_pays_only_the_merchant_it_names(server: Server) -> None:
    wallet, till, now_s = fund(server), till_of(server), time.time()
    other = till_of(server)
    here = wallet.code(0, 0, limit_minor=1000, at_s=now_s, bound_to=till.merchant_id)
    assert settle(server, till, till.record(here, 500, at_s=now_s)).result == "paid"
    there = wallet.code(0, 1, limit_minor=1000, at_s=now_s, bound_to=till.merchant_id)
    refused = settle(server, other, other.record(there, 500, at_s=now_s))
    assert (refused.result, refused.loss_minor) == ("refused_invalid", 500)
    assert_books_clean(server)


def test_what_the_till_should_have_refused_is_the_merchants_loss(server: Server) -> None:
    wallet, till, now_s = fund(server), till_of(server), time.time()
    before = balances(server)
    above_limit = till.record(wallet.code(0, 0, limit_minor=300, at_s=now_s), 301, at_s=now_s)
    stale = till.record(wallet.code(0, 1, limit_minor=300, at_s=now_s - 900), 100, at_s=now_s)
    garbage = till.record(v4_offline.PREFIX + "A" * (v4_offline.LENGTH - 28), 200, at_s=now_s)
    results = [settle(server, till, record) for record in (above_limit, stale)]
    assert [(r.result, r.paid_minor, r.loss_minor) for r in results] == [
        ("refused_invalid", 0, 301),
        ("refused_invalid", 0, 100),
    ]
    # The garbage code's line cannot be rebuilt by the server: the next record's prev is
    # taken as it comes (as after a recorded gap).
    assert settle(server, till, garbage).result == "refused_invalid"
    follow = till.record(wallet.code(1, 0, limit_minor=500, at_s=now_s), 500, at_s=now_s)
    assert settle(server, till, follow).result == "paid"
    assert changed(before, balances(server)) == {
        (LOSS, till.merchant_id): 601,
        (SYSTEM, SHORTFALL_OWNER): -601,
        (ESCROW, wallet.allowance_id): -500,
        ("merchant", till.merchant_id): 500,
    }
    assert_books_clean(server)


def test_the_same_code_at_two_tills_of_one_merchant_pays_once(server: Server) -> None:
    wallet = fund(server)
    first = till_of(server)
    second = Till(*_second_terminal(server, first))
    now_s = time.time()
    code = wallet.code(2, 3, limit_minor=1000, at_s=now_s)
    assert settle(server, first, first.record(code, 900, at_s=now_s)).result == "paid"
    before = balances(server)
    duplicate = settle(server, second, second.record(code, 900, at_s=now_s))
    assert (duplicate.result, duplicate.paid_minor, duplicate.loss_minor) == ("duplicate", 0, 0)
    assert balances(server) == before
    with server.session() as session:
        user = session.get(User, wallet.user_id)
        assert user is not None and user.offline_blocked_at_s is None
    assert_books_clean(server)


def _second_terminal(server: Server, till: Till) -> tuple[str, str]:
    from paycode.server.operations import admin

    with server.session() as session:
        terminal, _secret = admin.create_terminal(
            session, _box(server), till.merchant_id, time.time()
        )
    return terminal.id, till.merchant_id


def _second_sale_of_a_paid_order_moves_nothing(
    server: Server, monkeypatch: pytest.MonkeyPatch | None = None
) -> None:
    """A sale paid offline, then another code forwarded under the same order id: the second is
    duplicate_order, nothing paid, no loss. With `monkeypatch`, order_paid reads nothing, as when
    the first payment commits between that read and the second payment's insert."""
    wallet, till, now_s = fund(server), till_of(server), time.time()
    first = till.record(wallet.code(0, 0, limit_minor=1000, at_s=now_s), 400, at_s=now_s)
    assert settle(server, till, first).result == "paid"
    before = balances(server)
    if monkeypatch is not None:
        monkeypatch.setattr(offline_settlement, "order_paid", lambda *_args: False)
    again = till.record(
        wallet.code(1, 0, limit_minor=1000, at_s=now_s),
        400,
        at_s=now_s,
        order=first.merchant_order_id,
    )
    settled = settle(server, till, again)
    assert (settled.result, settled.paid_minor, settled.loss_minor) == ("duplicate_order", 0, 0)
    assert balances(server) == before
    assert_books_clean(server)


def test_an_order_paid_before_is_not_paid_again_from_escrow(server: Server) -> None:
    _second_sale_of_a_paid_order_moves_nothing(server)


def test_an_order_paid_between_the_check_and_the_payment_is_duplicate_order_not_a_500(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: order_paid only reads; an online charge of the same order committing
    after that read made the payment insert hit the UNIQUE index: an IntegrityError, a 500."""
    _second_sale_of_a_paid_order_moves_nothing(server, monkeypatch)


def test_an_acceptance_after_the_sweep_time_is_late(server: Server) -> None:
    wallet, till, now_s = fund(server), till_of(server), time.time()
    with server.session() as session:
        allowance = session.get(OfflineAllowance, wallet.allowance_id)
        assert allowance is not None
        returns_at_s = allowance.returns_at_s
    record = till.record(wallet.code(3, 0, limit_minor=1000, at_s=now_s), 1000, at_s=now_s)
    settled = settle(server, till, record, now_s=returns_at_s + 1)
    # The worker has not swept this escrow (no worker here): it still pays, marked late.
    assert (settled.result, settled.paid_minor, settled.loss_minor) == ("late", 1000, 0)
    assert_books_clean(server)


# -- the chain ------------------------------------------------------------------------------------


def test_records_settle_in_seq_order_along_the_hash_chain(server: Server) -> None:
    wallet, till, now_s = fund(server), till_of(server), time.time()
    one, two, three = (
        till.record(wallet.code(0, i, limit_minor=100, at_s=now_s), 100, at_s=now_s)
        for i in range(3)
    )
    with pytest.raises(ChainOutOfOrder) as early:
        settle(server, till, two)
    assert early.value.expected_seq == 1 and early.value.code == ErrorCode.OFFLINE_OUT_OF_ORDER
    with server.session() as session:
        assert session.get(OfflineAcceptance, (till.terminal_id, two.id)) is None
    assert settle(server, till, one).result == "paid"
    forged = _with_prev(two)
    with pytest.raises(ApiError) as broken:
        settle(server, till, forged)
    assert broken.value.code == ErrorCode.OFFLINE_CHAIN_BROKEN
    with pytest.raises(ChainOutOfOrder) as late:
        settle(server, till, three)
    assert late.value.expected_seq == 2
    assert settle(server, till, two).result == "paid"
    assert settle(server, till, three).result == "paid"
    assert settle(server, till, one).replayed  # an old retry still gets its stored answer
    assert_books_clean(server)


def _with_prev(record: AcceptanceRecord) -> AcceptanceRecord:
    return AcceptanceRecord(
        id=record.id,
        seq=record.seq,
        prev="f" * 64,
        code=record.code,
        amount_minor=record.amount_minor,
        currency=record.currency,
        merchant_order_id=record.merchant_order_id,
        at_s=record.at_s,
    )


def test_a_recorded_gap_lets_the_till_continue_after_a_lost_log(server: Server) -> None:
    wallet, till, now_s = fund(server), till_of(server), time.time()
    first = till.record(wallet.code(0, 0, limit_minor=100, at_s=now_s), 100, at_s=now_s)
    assert settle(server, till, first).result == "paid"
    lost = Till(till.terminal_id, till.merchant_id, seq=5, last_hash="ab" * 32)  # a new disk
    record = lost.record(wallet.code(0, 1, limit_minor=100, at_s=now_s), 100, at_s=now_s)
    with pytest.raises(ChainOutOfOrder):
        settle(server, till, record)
    with server.session() as session, pytest.raises(ApiError):
        record_gap(session, till.terminal_id, from_seq=3, to_seq=5)
    with server.session() as session:
        assert record_gap(session, till.terminal_id, from_seq=2, to_seq=5) == 6
    assert settle(server, till, record).result == "paid"
    assert_books_clean(server)


# -- over-spend ---------------------------------------------------------------------------------


def test_one_code_at_two_merchants_is_paid_at_both_then_locks_the_holder(server: Server) -> None:
    wallet, now_s = fund(server), time.time()
    first, second = till_of(server), till_of(server)
    code = wallet.code(1, 0, limit_minor=1000, at_s=now_s)
    assert settle(server, first, first.record(code, 600, at_s=now_s)).result == "paid"
    settled = settle(server, second, second.record(code, 600, at_s=now_s))
    assert (settled.result, settled.paid_minor) == ("paid", 600)
    _assert_locked(server, wallet, now_s)
    assert_books_clean(server)


def _assert_locked(server: Server, wallet: OfflineWallet, now_s: float) -> None:
    with server.session() as session:
        user = session.get(User, wallet.user_id)
        device = session.get(Device, wallet.device_id)
        certificates = session.scalars(
            select(OfflineCertificate).where(OfflineCertificate.allowance_id == wallet.allowance_id)
        ).all()
    assert user is not None and user.offline_blocked_at_s is not None
    assert device is not None and device.revoked_at_s is not None
    assert len(certificates) == 4 and all(c.denied_at_s is not None for c in certificates)


def test_a_cloned_allowance_pays_up_to_its_escrow_and_the_rest_is_booked_loss(
    server: Server,
) -> None:
    """A = 4000, T = p = 1000. The original spends 3600 at one merchant; the clone spends the
    same certificates at another: escrow pays 400 more, then nothing. Loss = accepted - A."""
    wallet, now_s = fund(server, 4000), time.time()
    honest, clone = till_of(server), till_of(server)
    before = balances(server)
    spent = [(0, 600), (1, 1000), (2, 1000), (3, 1000)]
    for index, amount in spent:
        code = wallet.code(index, 0, limit_minor=1000, at_s=now_s)
        assert settle(server, honest, honest.record(code, amount, at_s=now_s)).result == "paid"
    with server.session() as session:
        user = session.get(User, wallet.user_id)
        assert user is not None and user.offline_blocked_at_s is None
    cloned = [(0, 1, 600), (1, 1, 1000)]
    results = [
        settle(
            server,
            clone,
            clone.record(wallet.code(i, c, limit_minor=1000, at_s=now_s), amount, at_s=now_s),
        )
        for i, c, amount in cloned
    ]
    assert [(r.result, r.paid_minor, r.loss_minor) for r in results] == [
        ("paid_short", 400, 200),
        ("unpaid", 0, 1000),
    ]
    accepted_minor = sum(a for _, a in spent) + sum(a for _, _, a in cloned)
    loss_minor = accepted_minor - 4000
    assert changed(before, balances(server)) == {
        (ESCROW, wallet.allowance_id): -4000,
        ("merchant", honest.merchant_id): 3600,
        ("merchant", clone.merchant_id): 400,
        (LOSS, clone.merchant_id): loss_minor,
        (SYSTEM, SHORTFALL_OWNER): -loss_minor,
    }
    _assert_locked(server, wallet, now_s)
    assert_books_clean(server)


# -- over HTTP ----------------------------------------------------------------------------------


def _call(
    server: Server,
    merchant: Any,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    key: str = "",
) -> tuple[int, dict[str, Any], dict[str, str]]:
    raw = json.dumps(body).encode() if body is not None else b""
    headers = terminal_auth.sign_headers(
        merchant.key_id, merchant.secret, method, path, raw, timestamp_s=int(time.time())
    )
    if body is not None:
        headers |= {"Content-Type": "application/json", "Idempotency-Key": key}
    request = urllib.request.Request(
        server.url + path, data=raw if body is not None else None, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:
            return reply.status, json.loads(reply.read()), dict(reply.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def _body(record: AcceptanceRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "seq": record.seq,
        "prev": record.prev,
        "code": record.code,
        "amount_minor": record.amount_minor,
        "currency": record.currency,
        "merchant_order_id": record.merchant_order_id,
        "at_s": record.at_s,
    }


def test_a_till_fetches_keys_and_forwards_its_log_over_http(live_server: Server) -> None:
    server = live_server
    merchant = new_merchant(server, "OfflineHttp")
    till = Till(merchant.key_id, merchant.merchant_id)
    wallet, now_s = fund(server), time.time()

    status, keys, _ = _call(server, merchant, "GET", "/v1/offline/keys")
    assert status == 200
    assert (keys["merchant_id"], keys["terminal_id"], keys["currency"]) == (
        merchant.merchant_id,
        merchant.key_id,
        "CNY",
    )
    assert keys["limits"] == {
        "floor_minor": SETTINGS.floor_minor,
        "till_total_minor": SETTINGS.till_total_minor,
        "till_count_max": SETTINGS.till_count_max,
        "unsynced_age_max_s": SETTINGS.unsynced_age_max_s,
    }
    signer = parse_certificate(wallet.certificates[0]).fields.server_key_id.hex()
    published = {key["key_id"]: key for key in keys["keys"]}
    assert signer in published
    assert published[signer]["accept_until_s"] >= now_s + SETTINGS.lifetime_s
    assert wallet.cert_id(0) not in {item["cert_id"] for item in keys["denied"]}

    one, two, three = (
        till.record(wallet.code(0, i, limit_minor=1000, at_s=now_s), 500, at_s=now_s)
        for i in range(3)
    )
    status, early, _ = _call(server, merchant, "POST", PATH, _body(two), key=two.id)
    assert (status, early["code"], early["expected_seq"]) == (409, "offline_out_of_order", 1)
    status, wrong_key, _ = _call(server, merchant, "POST", PATH, _body(one), key="acc_other")
    assert (status, wrong_key["code"]) == (400, "invalid_request")
    extra = _body(one) | {"note": "x"}
    status, strict, _ = _call(server, merchant, "POST", PATH, extra, key=one.id)
    assert (status, strict["code"]) == (400, "invalid_request")

    status, first, headers = _call(server, merchant, "POST", PATH, _body(one), key=one.id)
    assert status == 200 and "Idempotent-Replayed" not in headers
    assert {k: first[k] for k in ("id", "result", "paid_minor", "loss_minor")} == {
        "id": one.id,
        "result": "paid",
        "paid_minor": 500,
        "loss_minor": 0,
    }
    assert first["payment_id"].startswith("pay_")
    before = balances(server)
    status, again, headers = _call(server, merchant, "POST", PATH, _body(one), key=one.id)
    assert status == 200 and headers.get("Idempotent-Replayed") == "true"
    assert {k: again[k] for k in first if k != "server_time"} == {
        k: first[k] for k in first if k != "server_time"
    }
    assert balances(server) == before

    broken = _with_prev(two)
    status, problem, _ = _call(server, merchant, "POST", PATH, _body(broken), key=two.id)
    assert (status, problem["code"]) == (409, "offline_chain_broken")
    for record in (two, three):
        status, reply, _ = _call(server, merchant, "POST", PATH, _body(record), key=record.id)
        assert (status, reply["result"]) == (200, "paid")

    # The same code at another merchant: paid from escrow, and the holder is locked; every
    # till that fetches keys afterwards refuses the user's certificates.
    other = till_of(server)
    assert settle(server, other, other.record(one.code, 500, at_s=now_s)).result == "paid"
    status, keys, _ = _call(server, merchant, "GET", "/v1/offline/keys")
    denied = {item["cert_id"]: item["until_s"] for item in keys["denied"]}
    assert {wallet.cert_id(i) for i in range(4)} <= set(denied)
    assert_books_clean(server)


PATH = "/v1/offline/acceptances"


def test_the_settlement_file_lists_offline_payments_and_losses_apart(server: Server) -> None:
    wallet, now_s = fund(server, 4000), time.time()
    honest, clone = till_of(server), till_of(server)
    for index in range(4):
        code = wallet.code(index, 0, limit_minor=1000, at_s=now_s)
        assert settle(server, honest, honest.record(code, 900, at_s=now_s)).result == "paid"
    code = wallet.code(0, 0, limit_minor=1000, at_s=now_s)
    short = clone.record(code, 900, at_s=now_s)
    assert settle(server, clone, short).result == "paid_short"  # 400 left in escrow
    config = ServerConfig.from_env(server.env)
    day = (dt.date(1970, 1, 1) + dt.timedelta(days=config.limits.day(now_s))).isoformat()
    found = settlement.for_merchant(
        server.engine, clone.merchant_id, day, config.limits, config.settlement
    )
    rows = list(csv.DictReader(io.StringIO(settlement_csv.to_csv(found))))
    by_record: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_record.setdefault(row["record"], []).append(row)
    [charge] = by_record["movement"]
    assert (charge["type"], charge["code_version"]) == ("charge", "v4")
    assert charge["amount_minor"] == "400"
    assert charge["offline_ref"] == short.id
    [loss] = by_record["offline_loss"]
    assert (loss["type"], loss["amount_minor"], loss["offline_ref"], loss["offline_result"]) == (
        "offline_loss",
        "500",
        short.id,
        "paid_short",
    )
    [total] = by_record["total"]
    assert total["amount_minor"] == "400"  # the loss is not money the merchant holds
    [loss_total] = by_record["offline_loss_total"]
    assert (loss_total["amount_minor"], loss_total["count"]) == ("500", "1")
    assert_books_clean(server)


# -- the operator's commands ------------------------------------------------------------------


def test_the_operator_unblocks_a_user_records_a_gap_and_sets_a_floor(server: Server) -> None:
    wallet, now_s = fund(server), time.time()
    first, second = till_of(server), till_of(server)
    code = wallet.code(0, 0, limit_minor=1000, at_s=now_s)
    settle(server, first, first.record(code, 300, at_s=now_s))
    settle(server, second, second.record(code, 300, at_s=now_s))
    with server.session() as session:
        user = session.get(User, wallet.user_id)
        assert user is not None and user.offline_blocked_at_s is not None
        name = user.name
    done = ok_json(server.cli_in_process("--json", "users", "offline-unblock", name))
    assert done["was_blocked"] is True
    with server.session() as session:
        user = session.get(User, wallet.user_id)
        assert user is not None and user.offline_blocked_at_s is None

    gap = ok_json(
        server.cli_in_process(
            "--json", "terminals", "offline-gap", first.terminal_id, "--from-seq", "2",
            "--to-seq", "4",
        )
    )  # fmt: skip
    assert gap["next_seq"] == 5
    lost = Till(first.terminal_id, first.merchant_id, seq=4, last_hash="cd" * 32)
    after = lost.record(wallet.code(1, 0, limit_minor=1000, at_s=now_s), 300, at_s=now_s)
    assert settle(server, lost, after).result == "paid"
    refused = server.cli_in_process(
        "--json", "terminals", "offline-gap", first.terminal_id, "--from-seq", "9", "--to-seq", "9"
    )
    assert refused.returncode != 0

    with server.session() as session:
        merchant_name = session.get(Merchant, first.merchant_id).name  # type: ignore[union-attr]
    updated = ok_json(
        server.cli_in_process(
            "--json", "merchants", "update", merchant_name, "--offline-floor", "2.50"
        )
    )
    assert updated["merchant"]["offline_floor_minor"] == 250
    above_floor = lost.record(wallet.code(2, 0, limit_minor=1000, at_s=now_s), 251, at_s=now_s)
    assert settle(server, lost, above_floor).result == "refused_invalid"
    assert_books_clean(server)


# -- a v4 code charged online ---------------------------------------------------------------------


def refused_charge(till: Any, expected: str, code_text: str, amount: str) -> Any:
    with pytest.raises(ServerRejected) as caught:
        till.charge(code=code_text, amount=amount, currency="CNY")
    assert caught.value.code == expected, (caught.value.code, caught.value.message)
    return caught.value


def test_an_online_till_charges_a_v4_code_once_and_refuses_instead_of_paying_short(
    server: Server,
) -> None:
    wallet, now_s = fund(server, 4000), time.time()
    merchant = new_merchant(server, "OnlineV4")
    till = merchant.till
    code = wallet.code(0, 0, limit_minor=1000, at_s=now_s)
    before = balances(server)
    paid = till.charge(code=code, amount="5.00", currency="CNY", idempotency_key="v4-first")
    assert (paid["status"], paid["code_version"], paid["amount_minor"]) == ("succeeded", "v4", 500)
    assert changed(before, balances(server)) == {
        (ESCROW, wallet.allowance_id): -500,
        ("merchant", merchant.merchant_id): 500,
    }
    again = till.charge(code=code, amount="5.00", currency="CNY", idempotency_key="v4-first")
    assert again["payment_id"] == paid["payment_id"]  # the stored reply, nothing moved
    assert refused_charge(till, ErrorCode.CODE_REPLAYED, code, "5.00").status == 422
    # The same code forwarded later by an offline till of this merchant pays nothing more.
    other_till = Till(*_second_terminal(server, Till(merchant.key_id, merchant.merchant_id)))
    assert settle(server, other_till, other_till.record(code, 500, at_s=now_s)).result == (
        "duplicate"
    )
    offline = till_of(server)
    for index in (1, 2, 3):
        spent = wallet.code(index, 0, limit_minor=1000, at_s=now_s)
        assert settle(server, offline, offline.record(spent, 1000, at_s=now_s)).result == "paid"
    # 4000 - 500 - 3000 = 500 left: a 6.00 charge is refused whole, never paid short.
    short = wallet.code(0, 1, limit_minor=1000, at_s=now_s)
    before = balances(server)
    refused_charge(till, ErrorCode.INSUFFICIENT_FUNDS, short, "6.00")
    assert balances(server) == before
    assert till.charge(code=short, amount="5.00", currency="CNY")["amount_minor"] == 500
    refused_charge(till, ErrorCode.CODE_MALFORMED, code[:-4] + "AAAA", "1.00")
    assert_books_clean(server)


def _v4_charges(outcome: str) -> float:
    metrics.flush()  # this process's samples are held until a flush (a scrape flushes too)
    value = REGISTRY.get_sample_value(
        "paycode_charges_total", {"outcome": outcome, "code_version": "v4"}
    )
    return value or 0.0


def test_online_v4_charges_are_counted_in_the_metrics_under_v4(server: Server) -> None:
    """Found in review: a v4 charge bypassed record_charge; the metrics counted it only as
    outcome "http_201" or its error under code_version "unknown"."""
    wallet, now_s = fund(server, 4000), time.time()
    till = new_merchant(server, "CountedV4").till
    code = wallet.code(0, 0, limit_minor=1000, at_s=now_s)
    before = {name: _v4_charges(name) for name in ("succeeded", "code_replayed")}
    till.charge(code=code, amount="5.00", currency="CNY")
    refused_charge(till, ErrorCode.CODE_REPLAYED, code, "5.00")
    assert _v4_charges("succeeded") == before["succeeded"] + 1
    assert _v4_charges("code_replayed") == before["code_replayed"] + 1


def test_an_online_v4_charge_is_refused_for_a_locked_holder(server: Server) -> None:
    wallet, now_s = fund(server), time.time()
    first, second = till_of(server), till_of(server)
    code = wallet.code(0, 0, limit_minor=1000, at_s=now_s)
    settle(server, first, first.record(code, 300, at_s=now_s))
    settle(server, second, second.record(code, 300, at_s=now_s))  # over-spend: locked
    till = new_merchant(server, "OnlineV4Locked").till
    fresh = wallet.code(1, 0, limit_minor=1000, at_s=now_s)
    refused_charge(till, ErrorCode.OFFLINE_BLOCKED, fresh, "1.00")
    assert_books_clean(server)


# -- races ----------------------------------------------------------------------------------------


def test_racing_tills_settle_one_code_once_per_merchant_and_escrow_never_overpays(
    server: Server,
) -> None:
    """Two tills of one merchant and two other merchants forward the same code at the same
    moment: the merchant's UNIQUE claim makes one of its two a duplicate, the escrow lock
    makes the merchants' payments add up to at most what escrow held."""
    wallet, now_s = fund(server, 4000), time.time()
    first = till_of(server)
    second = Till(*_second_terminal(server, first))
    others = [till_of(server), till_of(server)]
    spent = wallet.code(1, 0, limit_minor=1000, at_s=now_s)
    for index in (0, 2, 3):  # escrow keeps 1000 - 100 = 900 for the race
        code = wallet.code(index, 0, limit_minor=1000, at_s=now_s)
        assert settle(server, others[0], others[0].record(code, 1000, at_s=now_s)).result == "paid"
    assert settle(server, others[0], others[0].record(spent, 100, at_s=now_s)).result == "paid"
    code = wallet.code(1, 1, limit_minor=1000, at_s=now_s)
    tills = [first, second, *others]
    records = [till.record(code, 600, at_s=now_s) for till in tills]
    results = all_at_once(
        [
            lambda till=till, record=record: settle(server, till, record)  # type: ignore[misc]
            for till, record in zip(tills, records, strict=True)
        ]
    )
    same_merchant = sorted(r.result for r in results[:2])
    assert same_merchant[0] == "duplicate" and same_merchant[1] != "duplicate"
    claiming = [r for r in results if r.result != "duplicate"]
    assert len(claiming) == 3
    assert sum(r.paid_minor for r in claiming) == 900  # all escrow held, no more
    assert sum(r.loss_minor for r in claiming) == 3 * 600 - 900
    _assert_locked(server, wallet, now_s)
    assert_books_clean(server)


# -- reconcile ------------------------------------------------------------------------------------


def test_reconcile_names_what_offline_books_must_never_show(server: Server) -> None:
    wallet, till, now_s = fund(server), till_of(server), time.time()
    record = till.record(wallet.code(0, 0, limit_minor=1000, at_s=now_s), 300, at_s=now_s)
    settle(server, till, record)
    with Session(server.engine) as session:  # never committed
        book_loss(
            session, merchant_id=till.merchant_id, currency="CNY", amount_minor=7, now_s=now_s
        )
        allowance = session.get(OfflineAllowance, wallet.allowance_id)
        assert allowance is not None
        later_s = allowance.returns_at_s + 2 * 3600
        report = reconcile.reconcile(session, now_s=later_s)
        session.rollback()
    found = {(item.code, item.subject) for item in report.mismatches}
    assert ("escrow_not_swept", wallet.allowance_id) in found
    assert ("loss_mismatch", f"loss:{till.merchant_id}:CNY") in found
    assert any(
        code == "transaction_orphan" and subject.startswith("txn_") for code, subject in found
    )
    assert_books_clean(server)
