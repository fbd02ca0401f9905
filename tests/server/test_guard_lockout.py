"""Who the charge guard can lock out, and what its answers reveal (issue 19, items 5, 11, 13),
on both databases, in-process (every request comes from 127.0.0.1, the shared address).

- item 5: one merchant's junk from a shared address does not block another merchant's till;
- item 11: a code altered by someone who saw it (no key) names the victim's phone but locks it
  only at the merchant it was sent from; the guessing limit still holds there;
- item 13: a code naming no enrolled device and one naming a device with a wrong tag or
  signature get the same reply and the same guard answers, after the same verification work;
  a v3 code anyone sealed for a known handle gets junk's reply, never `merchant_mismatch`.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete

from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.database.models import FailureCounter
from paycode.server.safety.guard import GuardSettings
from paycode.shared.errors import ServerRejected
from tests.support.in_process import reconfigure
from tests.support.servers import Server
from tests.support.shop import Bank, open_bank

START_MINOR = 10_000
BAD_V2 = "PC2" + "A" * 40
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
    answers = [_refused(shop_a, BAD_V2).code for _ in range(4)]
    assert answers == ["code_invalid"] * 3 + ["rate_limited"]
    assert _pays(shop_b, bank.code("v2"))  # behind the same NAT, another merchant
    assert _refused(shop_a, bank.code("v2", counter=1)).code == "rate_limited"
