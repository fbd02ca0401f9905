"""Paycode's merchant collection QR (the printed "收款码"): an EMV MPM payload we can recognise.

Our merchant account template sits under tag 26: a reverse-domain GUID ("dev.paycode", 00), the
merchant id (01) and optionally a terminal id (02). A static code (01 = "11") hangs by the till
and the consumer types the amount; a dynamic one (01 = "12") fixes the amount (54) and carries
an order reference (62/05) so that the order pays once. The poster, the wallet and the server
all go through these two functions, so each reads exactly what the other printed.

Writing is strict (anything the spec or our template forbids raises); reading is strict too for
our own codes, because we only ever print compliant ones: any deviation from the spec means the
code was not made here, or was damaged, and a wallet should not pay it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from paycode.shared.emv.mpm import DataObject, FieldValue, MpmPayload, decode_mpm, encode_mpm
from paycode.shared.errors import (
    AmountInvalid,
    CollectionInvalid,
    CurrencyUnknown,
    EmvFormatError,
    NotPaycodeCollection,
)
from paycode.shared.money import Currency, currency, format_amount, parse_amount

GUID: Final = "dev.paycode"
"""Tag 26 sub-tag 00: the reverse-domain globally unique identifier of our template."""
TEMPLATE_TAG: Final = "26"
NAME_CHARS_MAX: Final = 25
CITY_CHARS_MAX: Final = 15
REFERENCE_CHARS_MAX: Final = 25
AMOUNT_CHARS_MAX: Final = 13
TEMPLATE_CHARS_MAX: Final = 99
STATIC, DYNAMIC = "11", "12"


@dataclass(frozen=True)
class CollectionCode:
    """What a collection QR says. Amounts are decimal strings in the currency's canonical form."""

    merchant_id: str
    """Tag 26/01, e.g. "mer_0123456789abcdef"."""
    merchant_name: str
    """Tag 59, at most 25 printable ASCII characters."""
    merchant_city: str
    """Tag 60, at most 15 printable ASCII characters."""
    currency: str
    """ISO 4217 alpha ("CNY"); tag 53 carries its numeric code ("156")."""
    country_code: str = "CN"
    """Tag 58, ISO 3166-1 alpha-2."""
    terminal_id: str | None = None
    """Tag 26/02; None when any terminal of the merchant may take the payment."""
    amount: str | None = None
    """Tag 54; None makes a static code (01 = 11), a value a dynamic one (01 = 12)."""
    reference: str | None = None
    """Tag 62/05, the order reference; only dynamic codes carry one."""
    mcc: str = "0000"
    """Tag 52, ISO 18245 merchant category code."""


def build_collection_payload(code: CollectionCode) -> str:
    """The payload text to print. Raises AmountInvalid (CurrencyUnknown) for the amount or
    currency and CollectionInvalid (a ValueError) for anything else that cannot be written.
    The amount is written canonically ("12.5" CNY becomes "12.50")."""
    found = _currency(code.currency)
    amount = _amount_text(code.amount, found)
    _check_fields(code, dynamic=amount is not None)
    fields: list[tuple[str, FieldValue]] = [
        ("01", STATIC if amount is None else DYNAMIC),
        (TEMPLATE_TAG, _account_fields(code)),
        ("52", code.mcc),
        ("53", found.numeric),
    ]
    if amount is not None:
        fields.append(("54", amount))
    fields += [("58", code.country_code), ("59", code.merchant_name), ("60", code.merchant_city)]
    if code.reference is not None:
        fields.append(("62", [("05", code.reference)]))
    try:
        return encode_mpm(fields)
    except ValueError as error:
        raise CollectionInvalid(f"cannot write this collection code: {error}") from error


def read_collection(payload: str) -> CollectionCode:
    """The collection code in `payload`. Raises EmvFormatError/EmvCrcError for broken text and
    for our template used against our rules, NotPaycodeCollection for another scheme's QR."""
    decoded = decode_mpm(payload)
    template = _paycode_template(decoded)
    end = decoded.objects[-1].offset
    if decoded.deviations:
        first = decoded.deviations[0]
        offset = end if first.offset is None else first.offset
        raise EmvFormatError(f"Paycode collection code breaks the spec: {first}", offset=offset)
    merchant = template.child("01")
    if merchant is None:
        raise EmvFormatError("Paycode template has no merchant id (26/01)", offset=template.offset)
    found = _read_currency(decoded)
    amount = _read_amount(decoded, found)
    reference = _read_reference(decoded)
    if reference is not None and amount is None:
        raise EmvFormatError("a static collection code carries an order reference", offset=end)
    terminal = template.child("02")
    return CollectionCode(
        merchant_id=merchant.value,
        merchant_name=decoded.value("59") or "",
        merchant_city=decoded.value("60") or "",
        currency=found.alpha,
        country_code=decoded.value("58") or "",
        terminal_id=None if terminal is None else terminal.value,
        amount=amount,
        reference=reference,
        mcc=decoded.value("52") or "",
    )


def _currency(code: str) -> Currency:
    found = currency(code)
    if found.alpha != code:
        raise CurrencyUnknown(f"currency must be an ISO 4217 alpha code, got {code!r}")
    return found


def _amount_text(amount: str | None, found: Currency) -> str | None:
    if amount is None:
        return None
    text = format_amount(parse_amount(amount, found.alpha))
    if len(text) > AMOUNT_CHARS_MAX:
        raise AmountInvalid(f"amount {text} is longer than EMV's {AMOUNT_CHARS_MAX} characters")
    return text


def _check_fields(code: CollectionCode, *, dynamic: bool) -> None:
    """Friendly messages for the usual mistakes; encode_mpm still checks every spec rule."""
    _check_text("merchant name", code.merchant_name, NAME_CHARS_MAX)
    _check_text("merchant city", code.merchant_city, CITY_CHARS_MAX)
    _check_text("merchant id", code.merchant_id, TEMPLATE_CHARS_MAX)
    if code.terminal_id is not None:
        _check_text("terminal id", code.terminal_id, TEMPLATE_CHARS_MAX)
    if code.reference is not None:
        if not dynamic:
            raise CollectionInvalid("an order reference needs an amount (a dynamic code)")
        _check_text("order reference", code.reference, REFERENCE_CHARS_MAX)
    if len(_account_value(code)) > TEMPLATE_CHARS_MAX:
        raise CollectionInvalid("merchant id and terminal id together are too long for tag 26")


def _check_text(what: str, value: object, chars_max: int) -> None:
    if not isinstance(value, str) or not value:
        raise CollectionInvalid(f"{what} must be a non-empty string")
    if len(value) > chars_max:
        raise CollectionInvalid(f"{what} is {len(value)} characters; at most {chars_max}")
    if not (value.isascii() and value.isprintable()):
        raise CollectionInvalid(f"{what} must be printable ASCII (EMV tag values are)")


def _account_fields(code: CollectionCode) -> list[tuple[str, str]]:
    fields = [("00", GUID), ("01", code.merchant_id)]
    if code.terminal_id is not None:
        fields.append(("02", code.terminal_id))
    return fields


def _account_value(code: CollectionCode) -> str:
    return "".join(f"{tag}{len(value):02d}{value}" for tag, value in _account_fields(code))


def _paycode_template(decoded: MpmPayload) -> DataObject:
    for account in decoded.merchant_accounts:
        guid = account.child("00")
        if guid is not None and guid.value.casefold() == GUID:
            return account
    scheme = decoded.scheme or "an unknown scheme"
    raise NotPaycodeCollection(f"a merchant QR of {scheme}, not a Paycode collection code")


def _read_currency(decoded: MpmPayload) -> Currency:
    item = decoded.find("53")
    assert item is not None, "no deviations, so the mandatory 53 is present"
    try:
        return currency(item.value)
    except CurrencyUnknown:
        raise EmvFormatError(f"unsupported currency {item.value}", offset=item.offset) from None


def _read_amount(decoded: MpmPayload, found: Currency) -> str | None:
    """The canonical amount of a dynamic code; None for a static one. 01 must say which."""
    initiation, item = decoded.find("01"), decoded.find("54")
    if initiation is None or (initiation.value == DYNAMIC) != (item is not None):
        offset = decoded.objects[0].offset if initiation is None else initiation.offset
        raise EmvFormatError("01 must be 12 with an amount and 11 without", offset=offset)
    if item is None:
        return None
    try:
        return format_amount(parse_amount(item.value, found.alpha))
    except AmountInvalid as error:
        raise EmvFormatError(f"amount: {error.message}", offset=item.offset) from None


def _read_reference(decoded: MpmPayload) -> str | None:
    additional = decoded.find("62")
    reference = None if additional is None else additional.child("05")
    return None if reference is None else reference.value
