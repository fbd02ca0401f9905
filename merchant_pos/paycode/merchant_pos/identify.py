"""What is this code? Classify any scanned text: which payment-code version, an EMV payload,
or not ours. Pure: takes text, returns a description; never verifies or charges."""

from __future__ import annotations

from typing import Any

from paycode.shared.emv.collection import read_collection
from paycode.shared.emv.cpm import decode_cpm
from paycode.shared.emv.mpm import DataObject, MpmPayload, decode_mpm
from paycode.shared.errors import CodeMalformed, CurrencyUnknown, EmvCrcError, NotPaycodeCollection
from paycode.shared.money import currency
from paycode.shared.versions.registry import route

MPM_PREFIX = "000"
"""Every merchant-presented payload opens with ID 00 and a length of 0X (02: "01", or DuitNow's
"02"): text opening so is an EMV payload, well formed or not."""
CRC_TAG = "6304"
"""The CRC object (ID 63, length 04) closes every merchant-presented payload, 4 hex digits."""
_HEX_DIGITS = frozenset("0123456789ABCDEFabcdef")


def describe(text: str) -> dict[str, Any]:
    """A JSON-ready description of `text`. Never raises for any input."""
    info: dict[str, Any] = {"text": text, "length": len(text)}
    try:
        codec = route(text)
    except CodeMalformed:
        return info | _describe_foreign(text)
    info |= {"kind": "payment_code", "version": codec.version, "symbology": codec.symbology}
    try:
        codec.parse(text)
        info["well_formed"] = True
    except CodeMalformed as error:
        info |= {"well_formed": False, "error": error.code, "message": error.message}
    return info


def _describe_foreign(text: str) -> dict[str, Any]:
    if text.startswith("hQVDUFY"):
        try:
            payload = decode_cpm(text)
        except CodeMalformed as error:
            return {
                "kind": "emv_cpm",
                "well_formed": False,
                "error": error.code,
                "message": error.message,
            }
        apps = [
            {"aid": (a.aid or b"").hex().upper(), "label": a.label} for a in payload.applications
        ]
        return {"kind": "emv_cpm", "well_formed": True, "applications": apps}
    if looks_like_mpm(text):
        return _describe_mpm(text)
    return {"kind": "not_ours", "note": "not a payment code of any live version"}


def looks_like_mpm(text: str) -> bool:
    """Whether `text` is meant as an EMV merchant-presented payload: it opens with ID 00 or
    ends with the CRC object. Such text that does not parse gets the parser's error and its
    offset, which says where it broke; "not a payment code" would say nothing."""
    crc = text[-4:]
    ends_with_crc = text[-8:-4] == CRC_TAG and len(crc) == 4 and set(crc) <= _HEX_DIGITS
    return text.startswith(MPM_PREFIX) or ends_with_crc


def _describe_mpm(text: str) -> dict[str, Any]:
    """Every field a cashier or a developer asks about, the spec deviations, or the error."""
    try:
        decoded = decode_mpm(text)
    except CodeMalformed as error:
        reason = "crc_mismatch" if isinstance(error, EmvCrcError) else "format"
        offset = getattr(error, "offset", None)
        return {
            "kind": "emv_mpm",
            "well_formed": False,
            "error": error.code,
            "reason": reason,
            "message": error.message,
            "offset": offset,
        }
    numeric = decoded.value("53")
    return {
        "kind": "emv_mpm",
        "well_formed": True,
        "scheme": decoded.scheme,
        "payload_format": decoded.value("00"),
        "point_of_initiation": decoded.point_of_initiation,
        "merchant_name": decoded.value("59"),
        "merchant_city": decoded.value("60"),
        "merchant_category_code": decoded.value("52"),
        "currency": _currency_alpha(numeric),
        "currency_numeric": numeric,
        "amount": decoded.value("54"),
        "country_code": decoded.value("58"),
        "postal_code": decoded.value("61"),
        "merchant_accounts": {item.tag: _fields(item) for item in decoded.merchant_accounts},
        "additional_data": _optional_fields(decoded, "62"),
        "language_template": _optional_fields(decoded, "64"),
        "unreserved_templates": {
            item.tag: _fields(item) for item in decoded.objects if "80" <= item.tag <= "99"
        },
        "deviations": [
            {"rule": d.rule, "tag": d.tag, "offset": d.offset, "message": d.message}
            for d in decoded.deviations
        ],
        "paycode_collection": _paycode_collection(decoded),
    }


def _fields(item: DataObject) -> str | dict[str, str]:
    """A template as {sub-ID: value}; a primitive (or unreadable template) as its text."""
    if item.children is None:
        return item.value
    return {child.tag: child.value for child in item.children}


def _optional_fields(decoded: MpmPayload, tag: str) -> str | dict[str, str] | None:
    found = decoded.find(tag)
    return None if found is None else _fields(found)


def _currency_alpha(numeric: str | None) -> str | None:
    if numeric is None or len(numeric) != 3 or not (numeric.isascii() and numeric.isdigit()):
        return None
    try:
        return currency(numeric).alpha
    except CurrencyUnknown:
        return None


def _paycode_collection(decoded: MpmPayload) -> dict[str, Any] | None:
    """Our own fields for a Paycode collection code; None for other schemes' QR codes."""
    try:
        code = read_collection(decoded.text)
    except NotPaycodeCollection:
        return None
    except CodeMalformed as error:
        return {"error": error.code, "message": error.message}
    return {
        "merchant_id": code.merchant_id,
        "terminal_id": code.terminal_id,
        "reference": code.reference,
    }
