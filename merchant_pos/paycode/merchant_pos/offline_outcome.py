"""What the sale (merchant_pos.till) knows of the offline side: PAID OFFLINE's receipt, and
the two questions a sale asks its offline decision (docs/offline.md 4.2 step 1, 4.4). The
decision itself is merchant_pos.offline_charge; `till` only holds this interface, so a sale
without one (tests, `--present`) never goes offline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from paycode.merchant_pos.till import Sale, SaleOutcome

PAID_OFFLINE = "paid_offline"
"""The code and outcome of a sale the till accepted alone: the goods go, and the money settles
when the till syncs."""
OFFLINE_MESSAGE = "Settles when the till is back online."


@dataclass(frozen=True)
class OfflineReceipt:
    """What PAID OFFLINE shows and prints: the log's acceptance, and what waits to sync."""

    acceptance_id: str
    cert: str
    """The certificate id's first 8 hex: enough to find it, too little to link payers."""
    counter: int
    unsynced_count: int
    unsynced_text: str
    """The unsynced sum with its currency, "212.50 CNY"."""

    @property
    def note(self) -> str:
        sales = "sale" if self.unsynced_count == 1 else "sales"
        return f"offline: {self.unsynced_count} {sales}, {self.unsynced_text} to sync"


class OfflineSide(Protocol):
    def skip_online(self, code: str) -> bool:
        """Whether this code goes straight to the offline decision: a v4 code while the
        till's last contact failed moments ago (4.2 step 1), saving the cashier the retries."""
        ...

    def __call__(self, code: str, sale: Sale, outcome: SaleOutcome) -> SaleOutcome:
        """The outcome after the offline decision, given the online attempt's (line down)."""
        ...
