"""Codes issued online (docs/spec.md §14) in the charge transaction, on both databases at once:
the SQLite steps (paycode.server.charge.steps, the reference) and the PostgreSQL function of
migration 0012 must record a payment by an issuer's code alike, under the device that asked,
with the issuer beside it, and refuse it alike for time, replay and revocation.

Each charge is planned once and runs on both, as in tests/charge/test_code_lifetime.py, on the
seeded world of tests/charge/test_differential.py with one issuer added to it.
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from paycode.server.database.models import new_id
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.timestep import STEP_SECONDS, step_at
from paycode.shared.versions.base import DeviceCredential
from paycode.shared.versions.registry import by_name
from tests.charge.test_code_lifetime import MADE_AT_S, PHONE, present, same_rows
from tests.charge.test_differential import Backends, backends, restore

__all__ = ["backends"]  # the module fixture, both databases seeded alike
pytestmark = pytest.mark.postgres


def add_issuer(backends: Backends, version: str) -> tuple[str, DeviceCredential]:
    """An issuer of `version` for the seeded phone, the same row on both databases."""
    phone = backends.world.phones[PHONE]
    issuer_id, key = new_id("dev"), os.urandom(32)
    handle = by_name(version).new_handle()
    key_id, sealed = backends.world.box.seal(key, row_id=issuer_id)
    for engine in (backends.reference, backends.production):
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO devices (id, user_id, version, handle, key_id, key_sealed,"
                    " drift_steps, label, created_at_s, online_for_device_id) VALUES (:id, :user,"
                    " :version, :handle, :key_id, :sealed, 0, 'issued online', :now, :for)"
                ),
                {
                    "id": issuer_id,
                    "user": phone.user_id,
                    "version": version,
                    "handle": handle,
                    "key_id": key_id,
                    "sealed": sealed,
                    "now": MADE_AT_S - 600,
                    "for": phone.device_id,
                },
            )
    hiding_key = backends.world.keys.hiding_keys[version][0]
    return issuer_id, DeviceCredential(version, handle, key, hiding_key=hiding_key)


def payments_of(backends: Backends, issuer_id: str) -> list[list[tuple[object, ...]]]:
    found = []
    for engine in (backends.reference, backends.production):
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT device_id, status FROM payments WHERE online_issuer_id = :id"
                    " ORDER BY created_at_s"
                ),
                {"id": issuer_id},
            ).all()
        found.append([tuple(row) for row in rows])
    return found


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_an_issuer_code_pays_under_the_asking_device_alike_on_both(
    backends: Backends, version: str
) -> None:
    for engine in (backends.reference, backends.production):
        restore(engine, backends.world.snapshot)
    issuer_id, credential = add_issuer(backends, version)
    step = step_at(MADE_AT_S)
    codec = by_name(version)
    paying, late, revoked = (codec.generate(credential, step=step, counter=n) for n in range(3))

    assert present(backends, paying, MADE_AT_S + 5) == PaymentStatus.SUCCEEDED
    assert present(backends, paying, MADE_AT_S + 6) == ErrorCode.CODE_REPLAYED
    # Past the end of the next step: refused for time, and burned.
    assert present(backends, late, (step + 2) * STEP_SECONDS + 1) == ErrorCode.CODE_EXPIRED
    assert present(backends, late, MADE_AT_S + 7) == ErrorCode.CODE_REPLAYED
    same_rows(backends)
    phone_id = backends.world.phones[PHONE].device_id
    assert payments_of(backends, issuer_id) == [[(phone_id, PaymentStatus.SUCCEEDED)]] * 2

    for engine in (backends.reference, backends.production):
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE devices SET revoked_at_s = :at WHERE id = :id"),
                {"at": MADE_AT_S, "id": issuer_id},
            )
    assert present(backends, revoked, MADE_AT_S + 8) == ErrorCode.DEVICE_REVOKED
    same_rows(backends)
