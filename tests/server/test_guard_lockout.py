"""Who the charge guard can lock out, and what its answers reveal (issue 19, items 5, 11, 13),
on both databases, in-process (every request comes from 127.0.0.1, the shared address).

- item 5: one merchant's junk from a shared address does not block another merchant's till;
- item 11: a code altered by someone who saw it (no key) names the victim's phone but locks it
  only at the merchant it was sent from; the guessing limit still holds there;
- item 13: a code naming no enrolled device and one naming a device with a wrong tag or
  signature get the same reply and the same guard answers, after the same verification work;
  a v3 code anyone sealed for a known handle gets junk's reply, never `merchant_mismatch`;
  and the bound docs/spec.md §4.1 states on guesses against one handle is what the guard's
  own SQL lets through.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, delete

from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.database.models import FailureCounter
from paycode.server.safety import guard
from paycode.server.safety.guard import GuardScopes, GuardSettings
from paycode.shared.binding import MerchantBinding
from paycode.shared.checkdigit import damm_digit
from paycode.shared.enrollment import new_ed25519_seed
from paycode.shared.errors import ServerRejected
from paycode.shared.timestep import step_at
from paycode.shared.versions import v1_numeric, v2_qr, v3_ed25519
from paycode.shared.versions.base import DeviceCredential, Flags
from paycode.shared.versions.registry import by_name
from tests.support.in_process import reconfigure
from tests.support.servers import Server
from tests.support.shop import Bank, open_bank

START_MINOR = 10_000
BAD_CODE = v1_numeric.PREFIX + "0" * 21 + damm_digit(v1_numeric.PREFIX + "0" * 21)
"""Junk that is refused as code_invalid whatever the bank's hiding key: v1 carries no
merchant-bound flag (v2 junk unmasks to random flags and may read as bound elsewhere:
merchant_mismatch)."""
VERSIONS = ("v1", "v2", "v3")
MONTH_STEPS = 30 * 24 * 120
"""A photographed code 30 days old."""


@pytest.fixture
def bank(server: Server) -> Bank:
    with server.session() as session:
        session.execute(delete(FailureCounter))
    return open_bank(server, START_MINOR)


def _guard(monkeypatch: pytest.MonkeyPatch, bank: Bank, **numbers: Any) -> None:
    """Only the counters a test is about can fill: the others get room."""
    room = {
        "terminal_failures_max": 99,
        "merchant_failures_max": 99,
        "ip_failures_max": 99,
        "device_failures_max": 99,
    }
    reconfigure(monkeypatch, bank.server, guard=GuardSettings(**(room | numbers)))


def _refused(till: TerminalClient, code: str) -> ServerRejected:
    with pytest.raises(ServerRejected) as caught:
        till.charge(code=code, amount="1.00", currency="CNY")
    return caught.value


def _answer(till: TerminalClient, code: str) -> tuple[int, str, str]:
    refused = _refused(till, code)
    return refused.status, refused.code, str(refused)


def _pays(till: TerminalClient, code: str) -> bool:
    return till.charge(code=code, amount="1.00", currency="CNY")["status"] == "succeeded"


# -- item 5: the per-address counter is per merchant ------------------------------------------


def test_one_merchants_junk_from_a_shared_address_does_not_block_another_merchant(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    _guard(monkeypatch, bank, ip_failures_max=3)
    shop_a, shop_b = bank.till(0), bank.till(1)
    answers = [_refused(shop_a, BAD_CODE).code for _ in range(4)]
    assert answers == ["code_invalid"] * 3 + ["rate_limited"]
    assert _pays(shop_b, bank.code("v2"))  # behind the same NAT, another merchant
    assert _refused(shop_a, bank.code("v2", counter=1)).code == "rate_limited"


# -- item 11: an altered code locks the phone out of one merchant at most ----------------------


def _altered(version: str, seen: str, n: int) -> str:
    """`seen` with the part naming the device kept and its tag or signature broken, as anyone
    who saw the code can do without a key (variant `n`)."""
    if version == "v1":  # counter + 1 + n under the same tag, and a fresh check digit
        tag, masked = v1_numeric.CODEC.parse(seen)
        masked = (masked + 1 + n) % 10**v1_numeric.MASKED_DIGITS
        body = f"{v1_numeric.PREFIX}{tag}{masked:013d}"
        return body + damm_digit(body)
    raw = bytearray(base64.b32decode(seen[3:]) if version == "v2" else base64.b64decode(seen))
    if version == "v2":  # flip one masked counter bit
        raw[v2_qr.TAG_BYTES + 13] ^= 1 << n
        return v2_qr.PREFIX + base64.b32encode(bytes(raw)).decode()
    raw[-v3_ed25519.SIGNATURE_BYTES + n] ^= 1  # flip one signature bit
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("version", VERSIONS)
def test_an_altered_photographed_code_locks_the_phone_out_of_no_other_merchant(
    bank: Bank, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _guard(monkeypatch, bank, device_failures_max=5)
    _, credential = bank.device(version)
    codec, step = by_name(version), step_at(time.time())
    photographed = codec.generate(credential, step=step - MONTH_STEPS, counter=0)
    shop_a, shop_b = bank.till(0), bank.till(1)
    answers = [_refused(shop_a, _altered(version, photographed, n)).code for n in range(6)]
    assert answers == ["code_invalid"] * 5 + ["rate_limited"]
    assert _pays(shop_b, codec.generate(credential, step=step, counter=1))
    # The guessing limit still holds where the forgeries came from: that merchant takes no more
    # codes naming this phone until the block ends (its genuine ones neither: nothing claimed).
    assert _refused(shop_a, _altered(version, photographed, 6)).code == "rate_limited"
    genuine_at_a = _refused(shop_a, codec.generate(credential, step=step, counter=2))
    assert genuine_at_a.code == "rate_limited" and "pays at another shop" in str(genuine_at_a)
    assert _pays(shop_b, codec.generate(credential, step=step, counter=2))


# -- item 13: no answer tells an enrolled handle from a free one ---------------------------------


def _wrong_secret(version: str) -> bytes:
    return new_ed25519_seed()[0] if version == "v3" else os.urandom(32)


def _forgers(bank: Bank, version: str) -> tuple[DeviceCredential, DeviceCredential]:
    """(a forger naming the customer's enrolled device, one naming a handle nobody has): both
    hold the version's public parts (hiding key, seal key), neither the device's secret."""
    _, genuine = bank.device(version)
    known = dataclasses.replace(genuine, secret=_wrong_secret(version))
    free = dataclasses.replace(known, handle=by_name(version).new_handle())
    return known, free


@pytest.mark.parametrize("version", VERSIONS)
def test_a_code_naming_no_device_gets_the_reply_of_one_naming_a_device_with_a_wrong_tag(
    bank: Bank, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _guard(monkeypatch, bank, device_failures_max=2)
    codec, step = by_name(version), step_at(time.time())
    till = bank.till(0)
    runs = []
    for forger in _forgers(bank, version):
        codes = [codec.generate(forger, step=step, counter=n) for n in range(3)]
        runs.append([_answer(till, code) for code in codes])
    known, free = runs
    assert known[:2] == free[:2]
    assert known[0][:2] == (422, "code_invalid")
    assert [answer[:2] for answer in (known[2], free[2])] == [(429, "rate_limited")] * 2


def _count_calls(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> Callable[[], int]:
    calls = [0]
    inner = getattr(module, name)

    def counted(*args: Any) -> Any:
        calls[0] += 1
        return inner(*args)

    monkeypatch.setattr(module, name, counted)
    return lambda: calls[0]


CHECKS = {"v1": (v1_numeric, "_tag"), "v2": (v2_qr, "_tag"), "v3": (v3_ed25519, "ed25519_signed")}
"""The function each version checks a tag or signature with."""


@pytest.mark.parametrize("version", VERSIONS)
def test_a_code_naming_no_device_costs_the_verifications_of_one_with_a_wrong_tag(
    bank: Bank, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timing oracle, counted rather than timed: the same tag or signature checks are made
    whether or not the handle is enrolled (a decoy key stands in for a missing device)."""
    _guard(monkeypatch, bank)
    codec, step = by_name(version), step_at(time.time())
    known, free = (codec.generate(f, step=step, counter=7) for f in _forgers(bank, version))
    till = bank.till(0)
    _refused(till, codec.generate(_forgers(bank, version)[0], step=step, counter=8))  # warm
    module, name = CHECKS[version]
    checks = _count_calls(monkeypatch, module, name)
    _refused(till, known)
    on_known = checks()
    _refused(till, free)
    assert checks() - on_known == on_known > 0


def test_a_v3_code_anyone_sealed_for_a_known_handle_gets_the_reply_of_junk(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sealing needs only the public seal key, so a reading that names the device and claims a
    binding to another merchant proves nothing until its signature verifies: it must not be
    told apart from junk (`merchant_mismatch` would confirm the handle)."""
    _guard(monkeypatch, bank)
    codec, step = by_name("v3"), step_at(time.time())
    known, free = _forgers(bank, "v3")
    elsewhere = MerchantBinding(bank.merchant_id(1)).digest
    bound = int(Flags.MERCHANT_BOUND)

    def sealed(forger: DeviceCredential, counter: int) -> str:
        return codec.generate(forger, step=step, counter=counter, flags=bound, binding=elsewhere)

    junk_key = dataclasses.replace(known, seal_public_key=os.urandom(32))
    till = bank.till(0)
    junk = _answer(till, codec.generate(junk_key, step=step, counter=0))
    assert junk[:2] == (422, "code_invalid")
    assert _answer(till, sealed(known, 1)) == junk
    assert _answer(till, sealed(free, 2)) == junk
    assert _answer(till, codec.generate(known, step=step, counter=3)) == junk


# -- item 13: the spec's bound is the guard's own arithmetic ------------------------------------

SPEC = Path(__file__).resolve().parents[2] / "docs" / "spec.md"


def _attempts_against_one_handle(horizon_s: float) -> int:
    """A tireless attacker at one merchant against one handle, under the default guard: it
    sends a guess whenever the handle's counter is not blocked. Driven through the guard's own
    SQL (SQLite path) on an in-memory database."""
    settings = GuardSettings()
    engine = create_engine("sqlite://")
    FailureCounter.__table__.create(engine)
    scopes = GuardScopes(("code:v1:00@m",), (settings.device_failures_max,))
    attempts, now_s = 0, 0.0
    with engine.begin() as connection:
        for _ in range(10_000):  # bound: two days are under 200 attempts
            until_s = guard.blocked_until_s(connection, scopes, now_s)
            if until_s is not None:
                now_s = until_s
                continue
            if now_s >= horizon_s:
                break
            guard.count_failure(connection, scopes, settings, now_s)
            attempts += 1
            now_s += 0.001
    return attempts


def test_the_spec_bound_on_guesses_against_one_handle_is_the_guards_own() -> None:
    """Two days are simulated: from the second on, every day is alike (the back-off is at its
    maximum and never resets while the attacker keeps at it)."""
    limit = GuardSettings().device_failures_max
    day, two_days = _attempts_against_one_handle(86_400), _attempts_against_one_handle(2 * 86_400)
    year = day + 364 * (two_days - day)
    assert (day, two_days - day, year) == (29 * limit, 24 * limit, 8_765 * limit)
    spec = SPEC.read_text(encoding="utf-8")
    assert f"default {limit})" in spec
    assert "29 L" in spec and "8,765 L" in spec and f"{year:,}" in spec
