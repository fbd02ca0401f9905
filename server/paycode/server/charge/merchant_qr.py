"""The collection code (EMV MPM) of one merchant, as its rows say it: what the server signs and
hands a till to print (docs/spec.md, section 12).

Tags 59 and 60 are printable ASCII: the operator's or the transliterated form when the name or
city is in another script (paycode.server.operations.merchant_names), otherwise the name cut to
EMV's 25 characters and the city. The language template 64 then carries the language, the name
in its own script and, when it is not ASCII, the city (Merchant.ascii_name, ascii_city and
language, migration 0009).
"""

from __future__ import annotations

from paycode.server.database.models import Merchant
from paycode.shared.emv.collection import (
    LOCAL_NAME_CHARS_MAX,
    NAME_CHARS_MAX,
    CollectionCode,
)
from paycode.shared.money import format_amount, parse_amount


def collection_code_for(
    merchant: Merchant,
    *,
    amount: str | None = None,
    order_token: str | None = None,
    reference: str | None = None,
    terminal_id: str | None = None,
) -> CollectionCode:
    """`merchant`'s collection code: static without `amount`, dynamic (for one order, with its
    `order_token` and `reference`) with one. Raises AmountInvalid for an amount its currency
    cannot hold; build_collection_payload checks the rest when it writes the code."""
    if amount is not None:
        amount = format_amount(parse_amount(amount, merchant.currency))
    local = merchant.ascii_name is not None or merchant.ascii_city is not None
    return CollectionCode(
        merchant_id=merchant.id,
        merchant_name=merchant.ascii_name or merchant.name[:NAME_CHARS_MAX],
        merchant_city=merchant.ascii_city or merchant.city,
        currency=merchant.currency,
        country_code=merchant.country,
        terminal_id=terminal_id,
        amount=amount,
        reference=reference,
        order_token=order_token,
        language=merchant.language if local else None,
        local_name=merchant.name[:LOCAL_NAME_CHARS_MAX] if local else None,
        local_city=merchant.city if merchant.ascii_city is not None else None,
    )
