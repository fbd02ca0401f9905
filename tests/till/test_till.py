"""The till's sale logic with the server as its neighbour: final outcomes after lost answers."""

from __future__ import annotations

from typing import Any

import pytest

from paycode.merchant_pos.messages import CASHIER_MESSAGES, cashier_message
from paycode.merchant_pos.till import Sale, charge_code, final_outcome
from paycode.shared.codes import HTTP_STATUS
from paycode.shared.errors import ServerRejected, ServerUnreachable


class LostAnswers:
    """A terminal client whose charge never gets an answer back (every retry was dropped),
    and whose order lookup says what the server actually did."""

    def __init__(self, by_order: list[dict[str, Any]] | Exception) -> None:
        self.by_order = by_order
        self.charges = 0
        self.keys: set[str] = set()

    def charge(self, **kwargs: Any) -> dict[str, Any]:
        self.charges += 1
        self.keys.add(kwargs["idempotency_key"])
        raise ServerUnreachable("connection reset after the request was sent")

    def payments_by_order(self, order_id: str) -> list[dict[str, Any]]:
        assert order_id.startswith("pos-")
        if isinstance(self.by_order, Exception):
            raise self.by_order
        return self.by_order


def _succeeded(amount: str, amount_minor: int, currency: str = "CNY") -> dict[str, Any]:
    """A successful payment as GET /v1/payments answers it (docs/api.md)."""
    return {
        "status": "succeeded",
        "payment_id": "pay_1",
        "amount": amount,
        "amount_minor": amount_minor,
        "currency": currency,
    }


def test_lost_answer_after_a_debit_is_reported_paid() -> None:
    client = LostAnswers([_succeeded("5.00", 500)])
    outcome = charge_code(client, "code", Sale("5.00", "CNY"))  # type: ignore[arg-type]
    assert outcome.paid and outcome.payment is not None and client.charges == 1


def test_regression_order_recovery_prints_paid_for_another_amount() -> None:
    """The order id already had a successful payment of 5.00 (a reused --order-id): the lookup
    after lost answers found it and the till printed PAID for a 12.50 sale. PAID needs the
    sale's amount and currency; another payment is NOT PAID, amount_mismatch, with what it
    paid."""
    client = LostAnswers([_succeeded("5.00", 500)])
    outcome = charge_code(client, "code", Sale("12.50", "CNY"))  # type: ignore[arg-type]
    assert not outcome.paid and outcome.code == "amount_mismatch"
    assert outcome.headline == "NOT PAID" and "5.00 CNY" in outcome.message
    assert outcome.payment is not None and outcome.payment["payment_id"] == "pay_1"


@pytest.mark.parametrize(
    "payment",
    [
        _succeeded("5.00", 500, "USD"),  # same digits, another currency
        _succeeded("5.00", 501),  # the decimal says one thing, the minor units another
        {"status": "succeeded", "payment_id": "pay_1", "amount": "5.00"},  # nothing to check
        _succeeded("5.00", True),  # type: ignore[arg-type] # a bool is not an amount
    ],
)
def test_paid_only_for_the_sales_amount_and_currency(payment: dict[str, Any]) -> None:
    outcome = final_outcome(Sale("5.00", "CNY"), payment)
    assert not outcome.paid and outcome.code == "amount_mismatch"
    assert final_outcome(Sale("5.00", "CNY"), _succeeded("5.00", 500)).paid


def test_lost_answer_with_a_recorded_failure_gives_its_reason() -> None:
    failed = {"status": "failed", "failure_code": "insufficient_funds", "payment_id": "pay_2"}
    outcome = charge_code(LostAnswers([failed]), "code", Sale("5.00", "CNY"))  # type: ignore[arg-type]
    assert not outcome.paid and outcome.code == "insufficient_funds"
    assert outcome.message == CASHIER_MESSAGES["insufficient_funds"]


def test_nothing_recorded_yet_is_never_called_not_charged() -> None:
    """An attempt may still be on its way: the same charge (same key) is sent once more, and
    unanswered too, the outcome is unknown (tests/reliability/test_network_faults.py)."""
    client = LostAnswers([])
    outcome = charge_code(client, "code", Sale("5.00", "CNY"))  # type: ignore[arg-type]
    assert not outcome.paid and outcome.code == "outcome_unknown"
    assert client.charges == 2 and len(client.keys) == 1


def test_server_gone_entirely_is_outcome_unknown_with_the_order_id() -> None:
    sale = Sale("5.00", "CNY")
    lookup_failed = ServerUnreachable("still down")
    outcome = charge_code(LostAnswers(lookup_failed), "code", sale)  # type: ignore[arg-type]
    assert not outcome.paid and outcome.code == "outcome_unknown"
    assert sale.order_id in outcome.message and outcome.headline == "OUTCOME UNKNOWN"


def test_refusal_is_final_and_human() -> None:
    class Refuses:
        def charge(self, **_kwargs: Any) -> dict[str, Any]:
            raise ServerRejected("code_expired", "code is outside its window", status=422)

    outcome = charge_code(Refuses(), "code", Sale("1.00", "CNY"))  # type: ignore[arg-type]
    assert outcome.code == "code_expired" and "refresh" in outcome.message


NOT_TILL_CODES = frozenset(
    {"password_invalid", "user_exists", "merchant_exists", "method_not_allowed", "qr_invalid",
     "payload_too_large", "unsupported_media_type", "invalid_request", "pin_invalid",
     "pin_not_set", "date_invalid", "ledger_mismatch", "settlement_too_large",
     "payment_changed", "weak_key", "key_proof_invalid", "offline_amount_invalid",
     "offline_allowance_live", "offline_daily_limit", "offline_out_of_order",
     "offline_chain_broken", "allowance_not_live", "mandate_invalid",
     "mandate_signature_invalid"}
)  # fmt: skip
"""Codes of the wallet and admin APIs, of the settlement file (GET /v1/settlement: the till
never fetches it), of the merchant dashboard (payment_changed: its refund form only), or of
malformed requests the till never sends, or of its offline sync (offline_out_of_order,
offline_chain_broken: paycode-pos sync reports them per record, no cashier reads them), or of
binding a points mandate (the wallet's: mandate_invalid, mandate_signature_invalid)."""


@pytest.mark.parametrize("code", sorted(set(HTTP_STATUS) - NOT_TILL_CODES))
def test_every_server_code_a_till_can_meet_has_a_cashier_message(code: str) -> None:
    assert code in CASHIER_MESSAGES, f"add a cashier line for {code}"


def test_unknown_code_falls_back_to_the_server_message() -> None:
    assert "newer thing" in cashier_message("brand_new_code", "newer thing")
