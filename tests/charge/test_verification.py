"""The charge's verification against the guard, in process with a directory of fake rows
(paycode.server.charge.verification): what a refused code counts, and against whom.

While two hiding keys are live (a rotation), one v1 code has two readings and tests two handles
at once (docs/spec.md §4.1, attacker (c)): each must count against its own handle, or the second
target gets its guess for free."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from paycode.server.charge.planning import ChargeAttempt, plan_charge
from paycode.server.charge.verification import CodeRefused, verify_charge_code
from paycode.server.database.directory import CachedDevice, TerminalCredential
from paycode.server.safety.guard import GuardSettings, handle_scope, scopes_for
from paycode.shared.timestep import step_at
from paycode.shared.versions import v1_numeric
from paycode.shared.versions.base import DeviceCredential, DeviceRecord, VerifierKeys

NOW_S = 1_767_225_600.5
GUARD = GuardSettings()


@dataclass
class FakeDirectory:
    """Device rows by (version, handle), as paycode.server.database.directory serves them."""

    rows: dict[tuple[str, bytes], CachedDevice] = field(default_factory=dict)

    def enroll(self, version: str, handle: bytes, key: bytes) -> None:
        record = DeviceRecord(f"dev_{handle.hex()}", handle, key)
        self.rows[(version, handle)] = CachedDevice(record, "usr_1")

    def device(self, version: str, handle: bytes, *, fresh: bool = False) -> CachedDevice | None:
        return self.rows.get((version, handle))


def _reading(code: str, hiding_key: bytes) -> bytes:
    """The handle a v1 code names under `hiding_key`."""
    tag, masked = v1_numeric.CODEC.parse(code)
    plain = (masked - v1_numeric._pad(hiding_key, tag)) % 10**v1_numeric.MASKED_DIGITS
    return (plain // 1000).to_bytes(v1_numeric.HANDLE_BYTES, "big")


def _attempt() -> ChargeAttempt:
    terminal = TerminalCredential("term_1", "mch_1", "CNY", b"\x00" * 32)
    return ChargeAttempt(
        terminal=terminal,
        nonce="nonce-1",
        nonce_expires_at_s=NOW_S + 600,
        idempotency_key="key-1",
        request_hash="0" * 64,
        now_s=NOW_S,
        guard_scopes=scopes_for(GUARD, "term_1", "mch_1", None),
    )


def test_a_v1_code_read_under_two_hiding_keys_counts_against_both_handles() -> None:
    """A forger holding both keys aims at phone A; the same code's other reading names phone B
    (enrolled here at that handle). Both tags fail; both handles are counted at the merchant."""
    old_key, new_key = os.urandom(32), os.urandom(32)
    keys = VerifierKeys(hiding_keys={"v1": (new_key, old_key)})
    target = v1_numeric.CODEC.new_handle()
    forger = DeviceCredential("v1", target, os.urandom(32), hiding_key=old_key)
    code = v1_numeric.CODEC.generate(forger, step=step_at(NOW_S), counter=0)
    other = _reading(code, new_key)
    directory = FakeDirectory()
    directory.enroll("v1", target, os.urandom(32))
    directory.enroll("v1", other, os.urandom(32))
    with pytest.raises(CodeRefused) as caught:
        verify_charge_code(code, NOW_S, directory, keys)  # type: ignore[arg-type]
    assert sorted(caught.value.handles) == sorted([("v1", target), ("v1", other)])
    plan = plan_charge(
        _attempt(),
        {"code": code, "amount": "1.00", "currency": "CNY"},
        directory,  # type: ignore[arg-type]
        keys,
    )
    assert plan.rejection == "code_invalid"
    counted = plan.guard_scopes(GUARD).names
    for handle in (target, other):
        assert handle_scope("v1", handle, "mch_1") in counted
