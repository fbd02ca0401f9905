"""Paycode's merchant collection QR (the printed "收款码"): an EMV MPM payload we can recognise.

Our merchant account template sits under tag 26: a reverse-domain GUID ("dev.paycode", 00), the
merchant id (01), optionally a terminal id (02) and, for an order the server created, the order
token (03). A static code (01 = "11") hangs by the till and the consumer types the amount; a
dynamic one (01 = "12") fixes the amount (54); only an order token makes it pay once, and only
the server's order row says what it pays (docs/spec.md, section 12). 62/05 shows the merchant's
order reference; the language template 64 carries the name and city in the merchant's own
script (59 and 60 are ASCII). The server signs what it issues (shared.emv.qr_signature). The
poster, the wallet and the server all go through these functions, so each reads exactly what
the other printed.

Writing is strict (anything the spec or our template forbids raises); reading is strict too for
our own codes, because we only ever print compliant ones: any deviation from the spec means the
code was not made here, or was damaged, and a wallet should not pay it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from paycode.shared.emv.mpm import (
    CRC_HEADER,
    DataObject,
    FieldValue,
    MpmPayload,
    decode_mpm,
    encode_mpm,
)
from paycode.shared.emv.qr_signature import (
    QrSignature,
    Signer,
    read_signature,
    signature_fields,
    signed_message,
)
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
LOCAL_NAME_CHARS_MAX: Final = 25
LOCAL_CITY_CHARS_MAX: Final = 15
ORDER_TOKEN_CHARS: Final = 24
"""An order token: 18 random bytes in base64url (144 bits), 26/03."""
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
    order_token: str | None = None
    """Tag 26/03: the server's order this code pays (dynamic codes only)."""
    language: str | None = None
    """Tag 64/00, ISO 639-1 in capitals ("ZH"), when the merchant has a name in its own script."""
    local_name: str | None = None
    """Tag 64/01: the name in the merchant's own script (UTF-8, at most 25 characters)."""
    local_city: str | None = None
    """Tag 64/02: the city in the merchant's own script (at most 15 characters)."""
    signature: QrSignature | None = None
    """The server's signature, as read (build_collection_payload signs with its `sign`)."""

    @property
    def display_name(self) -> str:
        return self.local_name or self.merchant_name

    @property
    def display_city(self) -> str:
        return self.local_city or self.merchant_city


def build_collection_payload(code: CollectionCode, sign: Signer | None = None) -> str:
    """The payload text to print, signed by `sign` when given (the server's QR key). Raises
    AmountInvalid (CurrencyUnknown) for the amount or currency and CollectionInvalid (a
    ValueError) for anything else that cannot be written. The amount is written canonically
    ("12.5" CNY becomes "12.50")."""
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
    if code.local_name is not None:
        fields.append(("64", _language_fields(code)))
    unsigned = _encode(fields)
    if sign is None:
        return unsigned
    covered = unsigned[: -len(CRC_HEADER) - 4]
    key_id, signature = sign(signed_message(covered))
    signed = _encode(fields + signature_fields(key_id, signature))
    assert signed.startswith(covered), "the signature covers the fields as they are printed"
    return signed


def _encode(fields: list[tuple[str, FieldValue]]) -> str:
    try:
        return encode_mpm(fields)
    except ValueError as error:
        raise CollectionInvalid(f"cannot write this collection code: {error}") from error


def _language_fields(code: CollectionCode) -> list[tuple[str, str]]:
    assert code.local_name is not None
    fields = [("00", code.language or ""), ("01", code.local_name)]
    if code.local_city is not None:
        fields.append(("02", code.local_city))
    return fields


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
    token = template.child("03")
    if token is not None and (amount is None or len(token.value) != ORDER_TOKEN_CHARS):
        raise EmvFormatError(
            "an order token needs an amount and 24 characters", offset=token.offset
        )
    terminal, token = template.child("02"), template.child("03")
    language = decoded.find("64")
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
        order_token=None if token is None else token.value,
        language=_child_value(language, "00"),
        local_name=_child_value(language, "01"),
        local_city=_child_value(language, "02"),
        signature=read_signature(payload, decoded),
    )


def _child_value(template: DataObject | None, tag: str) -> str | None:
    found = None if template is None else template.child(tag)
    return None if found is None else found.value


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
    if code.order_token is not None:
        if not dynamic or len(code.order_token) != ORDER_TOKEN_CHARS:
            raise CollectionInvalid("an order token needs an amount and 24 characters")
        _check_text("order token", code.order_token, ORDER_TOKEN_CHARS)
    _check_local(code)
    if len(_account_value(code)) > TEMPLATE_CHARS_MAX:
        raise CollectionInvalid("merchant id and terminal id together are too long for tag 26")


def _check_local(code: CollectionCode) -> None:
    """Tag 64: a language and a name go together; the city needs the name."""
    if code.local_name is None:
        if code.language is not None or code.local_city is not None:
            raise CollectionInvalid("a local city or language needs a local name")
        return
    language = code.language or ""
    if not (len(language) == 2 and language.isascii() and language.isalpha()):
        raise CollectionInvalid("language must be two letters (ISO 639-1), e.g. ZH")
    for what, value, chars_max in (
        ("local merchant name", code.local_name, LOCAL_NAME_CHARS_MAX),
        ("local merchant city", code.local_city, LOCAL_CITY_CHARS_MAX),
    ):
        if value is None:
            continue
        if not value or len(value) > chars_max or not value.isprintable():
            raise CollectionInvalid(f"{what} must be 1..{chars_max} printable characters")


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
    if code.order_token is not None:
        fields.append(("03", code.order_token))
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
