"""The CLI wallet's offline codes at this till: an allowance taken from the wallet's stand-in
server (tests/support/offline_wallet.py, which signs real certificates with its test key), its
codes made by the wallet (`paycode.client.offline.next_offline_code`) and decided by the till
(`merchant_pos.offline_sale.decide`) with the same server key in its keys copy. Round-robin
codes of four certificates pass one after another; what the till refuses of them is what
docs/offline.md 4.2 says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from paycode.appkit import http_client
from paycode.client import keystore, offline, offline_calls
from paycode.client.keystore import PASSPHRASE_ENV
from paycode.client.wallet import Wallet
from paycode.merchant_pos import offline_keys
from paycode.merchant_pos.offline_log import OfflineLog, open_log
from paycode.merchant_pos.offline_records import Acceptance
from paycode.merchant_pos.offline_sale import OfflineRequest, decide
from paycode.shared.binding import MerchantBinding
from paycode.shared.offline import key_id
from tests.support.offline_till import MERCHANT_ID, TERMINAL_ID, b64url, keys_answer
from tests.support.offline_wallet import BASE_URL, SERVER_PUBLIC, FakeOfflineServer, enroll

T0_S = 1_800_000_000.0


@pytest.fixture(autouse=True)
def _fast_keystore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "wallet to till test passphrase")
    monkeypatch.setattr(keystore, "SCRYPT_N", 2**10)


@pytest.fixture
def wallet(tmp_path: Path) -> Iterator[Wallet]:
    held = enroll(tmp_path / "wallet")
    server = FakeOfflineServer(home=held.home, now_s=T0_S)
    http_client.mount(BASE_URL, server)
    try:
        offline_calls.take(held, amount_minor=50_000, currency="CNY", pin="135790")
        yield held
    finally:
        http_client.unmount(BASE_URL)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[OfflineLog]:
    with open_log(tmp_path / "pos") as opened:
        yield opened


def _keys() -> offline_keys.OfflineKeys:
    answer = keys_answer(accept_until_s=int(T0_S) + 400_000)
    answer["keys"][0]["public_key"] = b64url(SERVER_PUBLIC)
    answer["keys"][0]["key_id"] = key_id(SERVER_PUBLIC).hex()
    return offline_keys.parse_answer(answer, fetched_at_s=T0_S, clock_offset_s=0.0)


def _sell(wallet: Wallet, log: OfflineLog, amount_minor: int, order: str, at_s: float) -> str:
    made = offline.next_offline_code(wallet, local_now_s=at_s, amount_minor=amount_minor)
    request = OfflineRequest(made.code.text, amount_minor, "CNY", order, at_s, at_s)
    decision = decide(request, _keys(), log)
    return "accepted" if isinstance(decision, Acceptance) else decision.code


def test_the_wallets_round_robin_codes_are_accepted_one_after_another(
    wallet: Wallet, log: OfflineLog
) -> None:
    results = [_sell(wallet, log, 2500, f"pos-{n}", T0_S + 10 * n) for n in range(4)]
    assert results == ["accepted"] * 4  # four certificates: no split-sale wait between them
    assert len({a.cert for a in log.unsynced()}) == 4
    # The fifth comes from the first certificate again, 40 s after it paid: one sale at a time.
    assert _sell(wallet, log, 2500, "pos-4", T0_S + 40) == "split_sale"
    assert _sell(wallet, log, 2500, "pos-5", T0_S + 130) == "accepted"


def test_a_wallet_code_above_its_amount_or_the_floor_is_refused(
    wallet: Wallet, log: OfflineLog
) -> None:
    made = offline.next_offline_code(wallet, local_now_s=T0_S, amount_minor=1200)
    request = OfflineRequest(made.code.text, 1201, "CNY", "pos-1", T0_S, T0_S)
    refused = decide(request, _keys(), log)
    assert not isinstance(refused, Acceptance) and refused.code == "offline_limit"


def test_a_wallet_code_bound_to_this_till_is_accepted_and_elsewhere_refused(
    wallet: Wallet, log: OfflineLog
) -> None:
    here = MerchantBinding(MERCHANT_ID, TERMINAL_ID)
    made = offline.next_offline_code(wallet, local_now_s=T0_S, amount_minor=900, binding=here)
    request = OfflineRequest(made.code.text, 900, "CNY", "pos-1", T0_S, T0_S)
    assert isinstance(decide(request, _keys(), log), Acceptance)
    there = MerchantBinding("mer_elsewhere")
    made = offline.next_offline_code(wallet, local_now_s=T0_S, amount_minor=900, binding=there)
    request = OfflineRequest(made.code.text, 900, "CNY", "pos-2", T0_S, T0_S)
    refused = decide(request, _keys(), log)
    assert not isinstance(refused, Acceptance) and refused.code == "merchant_mismatch"
