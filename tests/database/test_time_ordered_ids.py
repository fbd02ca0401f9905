"""Ledger transaction ids are time-ordered (database.models.time_ordered_id): inserted at an
index's right edge instead of on a random page (docs/deploy.md, "WAL")."""

from __future__ import annotations

import re

from paycode.server.database.models import LedgerTransaction, new_id, time_ordered_id

NOW_S = 1_780_000_000.0


def test_later_ids_sort_after_earlier_ones() -> None:
    ids = [time_ordered_id("txn", NOW_S + step * 0.001) for step in range(200)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_ids_of_one_millisecond_are_unique_by_their_random_part() -> None:
    ids = {time_ordered_id("txn", NOW_S) for _ in range(1000)}
    assert len(ids) == 1000
    assert len({identifier[:16] for identifier in ids}) == 1  # same prefix and millisecond


def test_an_id_fills_the_column_exactly_and_keeps_its_prefix() -> None:
    identifier = time_ordered_id("txn", NOW_S)
    column_length = LedgerTransaction.__table__.c.id.type.length
    assert len(identifier) == column_length == 32
    assert re.fullmatch(r"txn_[0-9a-f]{28}", identifier)
    assert identifier[4:16] == f"{int(NOW_S * 1000):012x}"


def test_published_ids_keep_their_format() -> None:
    assert re.fullmatch(r"pay_[0-9a-f]{16}", new_id("pay"))
