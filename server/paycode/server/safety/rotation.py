"""Master-key rotation: re-wrap every sealed secret under the current master key.

Sealed columns: devices.key_sealed, terminals.secret_sealed, server_keys.key_sealed and
merchants.notify_secret_sealed (the notification signing key), each beside its key_id. Only
the wrapping changes, never the secret, so the caches of running servers (device keys, terminal
secrets, verifier keys) stay valid, and a server with both keys configured opens either
wrapping: rotating needs no downtime (docs/operations.md gives the order).

Rows go in batches of `batch_rows`, each its own transaction, so no lock is held long against
live charges. Idempotent and resumable: a run re-wraps only rows still under another key id, so
re-running after a crash (or after `batches_max`) finishes the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy import Table, func, select, update
from sqlalchemy.orm import Session

from paycode.server.database.models import Base
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError

BATCH_ROWS: Final = 500
"""A batch is a few milliseconds of AES-GCM; its row locks delay a charge only that long."""
BATCHES_MAX: Final = 100_000
"""Per table and run: 50 million rows at the default batch; a larger table takes another run."""
SEALED_COLUMNS: Final = (
    ("devices", "key_sealed"),
    ("terminals", "secret_sealed"),
    ("server_keys", "key_sealed"),
    ("merchants", "notify_secret_sealed"),
)

Usage = dict[str, dict[str, int]]
"""table -> master key id -> sealed rows."""


@dataclass(frozen=True, slots=True)
class RotationReport:
    key_id: str
    rewrapped: dict[str, int]
    """Rows this run re-wrapped, per table."""
    remaining: dict[str, int]
    """Rows still under another key id, per table: all zero once the old key may go."""

    @property
    def complete(self) -> bool:
        return not any(self.remaining.values())


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


def key_usage(session: Session) -> Usage:
    """How many sealed rows each master key id holds, per table."""
    usage: Usage = {}
    for name, column in SEALED_COLUMNS:
        table = _table(name)
        rows = session.execute(
            select(table.c.key_id, func.count())
            .where(table.c[column].is_not(None))
            .group_by(table.c.key_id)
        ).all()
        usage[name] = {str(key_id): int(count) for key_id, count in rows}
    return usage


def not_current(usage: Usage, current_id: str) -> dict[str, int]:
    return {
        name: sum(count for key_id, count in ids.items() if key_id != current_id)
        for name, ids in usage.items()
    }


def rotate_master(
    session: Session,
    box: SecretBox,
    *,
    batch_rows: int = BATCH_ROWS,
    batches_max: int = BATCHES_MAX,
) -> RotationReport:
    """Re-wrap every row not under `box.current_id`; commits after each batch."""
    assert batch_rows > 0 and batches_max > 0
    _check_configured(key_usage(session), box)
    session.commit()  # ends the read: on SQLite every transaction holds the write lock
    rewrapped = {
        name: _rewrap_table(
            session, box, _table(name), column, batch_rows=batch_rows, batches_max=batches_max
        )
        for name, column in SEALED_COLUMNS
    }
    remaining = not_current(key_usage(session), box.current_id)
    session.commit()
    return RotationReport(box.current_id, rewrapped, remaining)


def _check_configured(usage: Usage, box: SecretBox) -> None:
    """Refuse before touching anything when a row's key is not configured: that row could
    never be re-wrapped, and the old key must not be dropped while it exists."""
    missing = sorted({key_id for ids in usage.values() for key_id in ids} - box.key_ids)
    if missing:
        raise ApiError(
            ErrorCode.MASTER_KEY_MISSING,
            f"rows are sealed under master key ids that are not configured: "
            f"{', '.join(missing)}; configure them next to the new key (docs/operations.md)",
        )


def _rewrap_table(
    session: Session,
    box: SecretBox,
    table: Table,
    column: str,
    *,
    batch_rows: int,
    batches_max: int,
) -> int:
    """Keyset pagination by id: each batch reads past the last one, so a row that another
    rotation re-wrapped meanwhile is neither read twice nor waited for."""
    pending = (table.c.key_id != box.current_id) & table.c[column].is_not(None)
    rewrapped, after = 0, ""
    for _batch in range(batches_max):
        rows = session.execute(
            select(table.c.id, table.c.key_id, table.c[column])
            .where(pending, table.c.id > after)
            .order_by(table.c.id)
            .limit(batch_rows)
        ).all()
        for row_id, key_id, sealed in rows:
            rewrapped += _rewrap_row(session, box, table, column, (row_id, key_id, sealed))
        session.commit()
        if len(rows) < batch_rows:
            break
        after = rows[-1][0]
    return rewrapped


def _rewrap_row(
    session: Session, box: SecretBox, table: Table, column: str, row: tuple[str, str, bytes]
) -> int:
    """1 if this call re-wrapped the row, 0 if someone else did first (the update is
    conditional on the old wrapping, so two rotations never overwrite each other)."""
    row_id, key_id, sealed = row
    try:
        secret = box.open(key_id, sealed, row_id=row_id)
    except LookupError as error:
        raise ApiError(
            ErrorCode.MASTER_KEY_INVALID, f"{table.name} row {row_id}: {error}"
        ) from error
    new_key_id, new_sealed = box.seal(secret, row_id=row_id)
    result = session.execute(
        update(table)
        .where(table.c.id == row_id, table.c.key_id == key_id, table.c[column] == sealed)
        .values({"key_id": new_key_id, column: new_sealed}),
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
