"""The charge batching writer's settings (paycode.server.charge.batch_writer), from the
environment: PAYCODE_CHARGE_BATCH, the most charges one PostgreSQL transaction commits
together; 1 turns batching off (each charge is one autocommit call through the pool, as before
issue 22). docs/operations.md lists it; docs/deploy.md counts the connection it adds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from paycode.server.safety.limits import env_integer

BATCH_ENV = "PAYCODE_CHARGE_BATCH"
BATCH_MAX_LIMIT = 256
BATCH_DEFAULT = 64


@dataclass(frozen=True, slots=True)
class BatchSettings:
    batch_max: int = BATCH_DEFAULT
    """Charges per transaction at most; 1: no writer at all."""
    queue_max: int = 256
    """Charges waiting for the writer at most; one more is refused at once (database_busy)."""
    wait_s: float = 20.0
    """A request's longest wait for its commit: under gunicorn's 30 s worker timeout."""

    @property
    def enabled(self) -> bool:
        return self.batch_max > 1

    @classmethod
    def parse(cls, env: Mapping[str, str]) -> BatchSettings:
        return cls(
            batch_max=env_integer(env, BATCH_ENV, BATCH_DEFAULT, low=1, high=BATCH_MAX_LIMIT)
        )
