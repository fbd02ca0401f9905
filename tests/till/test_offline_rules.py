"""The till's offline decision (docs/offline.md 4.2): every refusal, in its order, and the
acceptance, with real v4 codes signed in the test and a real log in tmp_path. A refusal logs
nothing; an acceptance is in the log, read back from the file, when `decide` returns."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from paycode.merchant_pos import offline_keys
from paycode.merchant_pos.offline_keys import MAX_AGE_S, OfflineKeys, OfflineKeysInvalid
from paycode.merchant_pos.offline_log import OfflineLog, open_log
from paycode.merchant_pos.offline_records import Acceptance
from paycode.merchant_pos.offline_sale import OfflineRequest, SaleRefused, decide
from paycode.shared.binding import MerchantBinding
from paycode.shared.offline import PaymentFields
from paycode.shared.timestep import step_at
from tests.support.offline_till import (
    MERCHANT_ID,
    NOW_S,
    TERMINAL_ID,
    Allowance,
    keys_answer,
    seed,
    till_keys,
)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[OfflineLog]:
    with open_log(tmp_path) as opened:
        yield opened


def _request(code: str, amount_minor: int = 1250, **changes: Any) -> OfflineRequest:
    fields: dict[str, Any] = {
        "code_text": code, "amount_minor": amount_minor, "currency": "CNY",
        "order": f"pos-{amount_minor}-{code[-12:]}", "now_s": NOW_S, "local_now_s": NOW_S,
    }  # fmt: skip
    return OfflineRequest(**(fields | changes))


def _refusal(decision: Acceptance | SaleRefused) -> str:
    return "accepted" if isinstance(decision, Acceptance) else decision.code


def _decide(
    log: OfflineLog, request: OfflineRequest, keys: OfflineKeys | None = None
) -> Acceptance | SaleRefused:
    return decide(request, till_keys() if keys is None else keys, log)


def test_a_good_code_is_accepted_and_on_disk_before_decide_returns(
    log: OfflineLog, tmp_path: Path
) -> None:
    allowance = Allowance("alice")
    code = allowance.code()
    decision = _decide(log, _request(code, 1250, order="pos-1"))
    assert isinstance(decision, Acceptance)
    assert (decision.order, decision.amount_minor, decision.counter) == ("pos-1", 1250, 0)
    assert decision.cert == allowance.cert_id.hex() and decision.code == code
    assert decision.at_s == int(NOW_S) and decision.seq == 1
    reread = OfflineLog(tmp_path / "offline")  # what a fresh start reads from the file
    try:
        assert reread.by_order("pos-1") == decision and reread.unsynced() == [decision]
    finally:
        reread.close()


def test_a_code_bound_to_this_till_or_its_merchant_is_accepted(log: OfflineLog) -> None:
    allowance = Allowance("bound")
    for number, binding in enumerate(
        [MerchantBinding(MERCHANT_ID, TERMINAL_ID), MerchantBinding(MERCHANT_ID)]
    ):
        now_s = NOW_S + 200 * number
        code = allowance.code(bound_to=binding, at_s=now_s)
        request = _request(code, order=f"pos-b{number}", now_s=now_s)
        assert _refusal(_decide(log, request)) == "accepted"


def test_a_v1_to_v3_code_needs_an_offline_one(log: OfflineLog) -> None:
    v3_like = "hQVDUFYwMWGBk08J8FBBWUNPREUD" + "A" * 184
    assert _refusal(_decide(log, _request(v3_like))) == "offline_code_needed"
    assert _refusal(_decide(log, _request("12345678901234567890"))) == "offline_code_needed"


def test_a_broken_v4_code_is_malformed(log: OfflineLog) -> None:
    code = Allowance("alice").code()
    assert _refusal(_decide(log, _request(code[:-8] + "AAAAAAAA"))) == "code_malformed"
    assert _refusal(_decide(log, _request(code[:-1]))) == "code_malformed"


def test_no_keys_or_old_keys_is_not_ready(log: OfflineLog) -> None:
    code = Allowance("alice").code()
    assert _refusal(decide(_request(code), None, log)) == "offline_not_ready"
    old = till_keys(fetched_at_s=NOW_S - MAX_AGE_S)
    assert _refusal(_decide(log, _request(code), old)) == "offline_not_ready"
    young = till_keys(fetched_at_s=NOW_S - MAX_AGE_S + 1)
    assert _refusal(_decide(log, _request(code), young)) == "accepted"


def test_a_certificate_of_an_unknown_or_retired_key_is_invalid(log: OfflineLog) -> None:
    rogue = Allowance("alice", server_seed=seed("leaked-or-forged"))
    assert _refusal(_decide(log, _request(rogue.code()))) == "certificate_invalid"
    retired = till_keys(accept_until_s=int(NOW_S))  # the key's last certificate settled
    assert _refusal(_decide(log, _request(Allowance("bob").code()), retired)) == (
        "certificate_invalid"
    )


def test_a_returned_certificate_is_refused_before_its_other_faults(log: OfflineLog) -> None:
    allowance = Allowance("returned", currency="USD")
    keys = till_keys(denied=(allowance.cert_id.hex(),))
    assert _refusal(_decide(log, _request(allowance.code()), keys)) == "certificate_returned"
    ended = till_keys(denied=(allowance.cert_id.hex(),))
    later = replace(ended, denied={allowance.cert_id.hex(): int(NOW_S)})  # denial over
    assert _refusal(_decide(log, _request(allowance.code()), later)) == "currency_mismatch"


def test_another_currency_is_refused(log: OfflineLog) -> None:
    code = Allowance("dollars", currency="USD").code()
    assert _refusal(_decide(log, _request(code))) == "currency_mismatch"
    assert _refusal(_decide(log, _request(Allowance("yuan").code(), currency="USD"))) == (
        "currency_mismatch"
    )


@pytest.mark.parametrize(
    ("now_s", "reason"),
    [(NOW_S - 3601, "certificate_expired"), (NOW_S + 86_400, "certificate_expired")],
    ids=["before_not_before", "at_expiry"],
)
def test_outside_the_certificate_window_is_expired(
    log: OfflineLog, now_s: float, reason: str
) -> None:
    code = Allowance("alice").code(at_s=now_s)
    assert _refusal(_decide(log, _request(code, now_s=now_s))) == reason


def test_a_code_the_certificate_does_not_allow_is_invalid(log: OfflineLog) -> None:
    allowance = Allowance("alice", count_max=4)
    step = step_at(NOW_S)
    for payment in (
        PaymentFields(counter=4, step=step, amount_limit_minor=1000),  # counter >= n
        PaymentFields(counter=0, step=step, amount_limit_minor=1000, flags=0x80),  # unknown flag
        PaymentFields(counter=0, step=step, amount_limit_minor=10_001),  # above p
    ):
        code = allowance.code_signed_anyway(payment)
        assert _refusal(_decide(log, _request(code, 500))) == "code_invalid"
    stolen = Allowance("alice")
    other_device = replace(stolen, label="mallory")  # another key signs alice's certificate
    code = other_device.code_signed_anyway(PaymentFields(0, step, 1000))
    forged = stolen.code()[:-88] + code[-88:]
    assert _refusal(_decide(log, _request(forged, 500))) in ("code_invalid", "code_malformed")


def test_a_code_bound_elsewhere_is_merchant_mismatch(log: OfflineLog) -> None:
    code = Allowance("alice").code(bound_to=MerchantBinding("mer_other_shop"))
    assert _refusal(_decide(log, _request(code))) == "merchant_mismatch"


@pytest.mark.parametrize(
    ("made_at_s", "reason"),
    [
        (NOW_S - 90, "code_expired"),
        (NOW_S - 60, "accepted"),
        (NOW_S + 30, "accepted"),
        (NOW_S + 60, "code_expired"),
    ],
)
def test_the_step_window_is_two_back_one_ahead(
    log: OfflineLog, made_at_s: float, reason: str
) -> None:
    code = Allowance("alice").code(at_s=made_at_s)
    assert _refusal(_decide(log, _request(code))) == reason


def test_a_code_is_accepted_once_and_its_counter_once(log: OfflineLog) -> None:
    allowance = Allowance("alice")
    code = allowance.code()
    assert _refusal(_decide(log, _request(code, 100, order="pos-1"))) == "accepted"
    soon = NOW_S + 30  # still fresh: the log refuses it, not the clock
    assert _refusal(_decide(log, _request(code, 100, order="pos-2", now_s=soon))) == (
        "code_replayed"
    )
    later = NOW_S + 200
    # The same counter signed again with another limit is another text, the same payment.
    again = allowance.code(counter=0, amount_limit_minor=5000, at_s=later)
    assert again != code
    assert _refusal(_decide(log, _request(again, 100, order="pos-3", now_s=later))) == (
        "code_replayed"
    )


@pytest.mark.parametrize(
    ("amount_minor", "amount_limit_minor", "floor_minor"),
    [(10_001, 10_000, 20_000), (5001, 5000, 10_000), (2001, 10_000, 2000), (1, 10_000, 0)],
    ids=["above_per_payment_cap", "above_code_limit", "above_floor", "offline_turned_off"],
)
def test_above_the_least_of_floor_cap_and_code_limit_is_offline_limit(
    log: OfflineLog, amount_minor: int, amount_limit_minor: int, floor_minor: int
) -> None:
    allowance = Allowance("alice", per_payment_cap_minor=10_000, total_cap_minor=12_500)
    code = allowance.code(amount_limit_minor=amount_limit_minor)
    keys = till_keys(floor_minor=floor_minor)
    assert _refusal(_decide(log, _request(code, amount_minor), keys)) == "offline_limit"
    within = min(floor_minor, amount_limit_minor)
    if within:
        assert _refusal(_decide(log, _request(code, within), keys)) == "accepted"


def test_a_certificate_pays_this_till_at_most_its_total_and_count(log: OfflineLog) -> None:
    allowance = Allowance("alice", total_cap_minor=12_500, count_max=3)
    at = iter(NOW_S + 200 * n for n in range(10))

    def sale(amount_minor: int) -> str:
        now_s = next(at)
        request = _request(allowance.code(at_s=now_s), amount_minor, now_s=now_s)
        return _refusal(_decide(log, request))

    assert [sale(10_000), sale(2501), sale(2500)] == ["accepted", "offline_limit", "accepted"]
    # n is enforced by the signed counter (< n, distinct at this till): a code past it is
    # code_invalid before the till's own count could refuse it.
    now_s = next(at)
    past = allowance.code_signed_anyway(PaymentFields(3, step_at(now_s), 100))
    assert _refusal(_decide(log, _request(past, 1, now_s=now_s))) == "code_invalid"


def test_one_sale_one_offline_payment(log: OfflineLog) -> None:
    alice, bob = Allowance("alice"), Allowance("bob")
    assert _refusal(_decide(log, _request(alice.code(), 5000, order="pos-9"))) == "accepted"
    second = _request(bob.code(), 5000, order="pos-9")
    assert _refusal(_decide(log, second)) == "split_sale"
    soon = _request(alice.code(at_s=NOW_S + 119), 5000, order="pos-10", now_s=NOW_S + 119)
    assert _refusal(_decide(log, soon)) == "split_sale"
    later = _request(alice.code(at_s=NOW_S + 120), 100, order="pos-11", now_s=NOW_S + 120)
    assert _refusal(_decide(log, later)) == "accepted"


def test_the_tills_unsynced_sum_count_and_age_are_bounded(log: OfflineLog) -> None:
    keys = till_keys(till_total_minor=3000, till_count_max=3, unsynced_age_max_s=3600)
    people = [Allowance(f"p{n}") for n in range(5)]

    def sale(person: Allowance, amount_minor: int, now_s: float = NOW_S) -> str:
        request = _request(person.code(at_s=now_s), amount_minor, now_s=now_s)
        return _refusal(_decide(log, request, keys))

    assert sale(people[0], 2000) == "accepted"
    assert sale(people[1], 1001) == "offline_till_full"  # 3001 > Q
    assert sale(people[1], 500) == "accepted"
    assert sale(people[2], 500) == "accepted"
    assert sale(people[3], 1) == "offline_till_full"  # count at till_count_max
    roomy = till_keys(till_total_minor=100_000, till_count_max=200, unsynced_age_max_s=3600)
    late = NOW_S + 3600
    request = _request(people[4].code(at_s=late), 100, now_s=late)
    assert _refusal(_decide(log, request, roomy)) == "offline_till_full"  # oldest too old


def test_a_refusal_logs_nothing(log: OfflineLog, tmp_path: Path) -> None:
    code = Allowance("alice").code(bound_to=MerchantBinding("mer_other_shop"))
    assert _refusal(_decide(log, _request(code))) == "merchant_mismatch"
    assert log.last_seq == 0 and not (tmp_path / "offline" / "acceptances.log").exists()


# -- the keys copy -----------------------------------------------------------------------------


def test_the_keys_copy_is_stored_privately_and_read_back(tmp_path: Path) -> None:
    keys = till_keys(denied=("ab" * 16,))
    path = offline_keys.save(tmp_path, keys)
    assert path == tmp_path / "offline" / "keys.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert offline_keys.load(tmp_path) == keys
    assert offline_keys.load(tmp_path / "none") is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda a: a.pop("limits"),
        lambda a: a["keys"][0].update(key_id="00000000"),  # not its key's id
        lambda a: a["keys"][0].update(public_key="AAAA"),
        lambda a: a["keys"][0].update(status="current"),
        lambda a: a["keys"].append(dict(a["keys"][0])),
        lambda a: a["denied"].append({"cert_id": "XY" * 16, "until_s": 1}),
        lambda a: a["limits"].update(floor_minor=12.5),
        lambda a: a["limits"].update(till_count_max=True),
        lambda a: a.update(currency="cny"),
        lambda a: a.update(merchant_id=""),
    ],
)
def test_a_malformed_keys_answer_is_refused_whole(damage: Any) -> None:
    answer = keys_answer()
    damage(answer)
    with pytest.raises(OfflineKeysInvalid) as raised:
        offline_keys.parse_answer(answer, fetched_at_s=NOW_S, clock_offset_s=0.0)
    assert raised.value.code == "offline_not_ready"


def test_a_damaged_keys_file_is_offline_not_ready(tmp_path: Path) -> None:
    offline_keys.save(tmp_path, till_keys())
    path = offline_keys.keys_path(tmp_path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(OfflineKeysInvalid):
        offline_keys.load(tmp_path)


def test_the_keys_clock_offset_moves_the_sale_clock(tmp_path: Path) -> None:
    """The till's own clock is an hour behind: with the offset learned at the fetch, a code
    made now on the server's clock is fresh, and the copy's age runs on the till's clock."""
    keys = replace(till_keys(fetched_at_s=NOW_S - 3600), clock_offset_s=3600.0)
    assert keys.server_time(NOW_S - 3600) == NOW_S and keys.age_s(NOW_S - 3600) == 0
    with open_log(tmp_path) as log:
        code = Allowance("alice").code()
        request = _request(code, now_s=keys.server_time(NOW_S - 3600), local_now_s=NOW_S - 3600)
        assert _refusal(decide(request, keys, log)) == "accepted"


def test_the_offline_limit_is_told_to_the_cashier_in_money_not_minor_units(
    log: OfflineLog,
) -> None:
    """Found by hand: the refusal read "at most 5000 minor units offline"."""
    code = Allowance("alice", per_payment_cap_minor=10_000, total_cap_minor=12_500).code(
        amount_limit_minor=5000
    )
    refused = _decide(log, _request(code, 6000))
    assert isinstance(refused, SaleRefused)
    assert refused.detail == "this code pays at most 50.00 CNY offline"
