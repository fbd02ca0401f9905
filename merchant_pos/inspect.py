"""What is this code? Classify any scanned text: which payment-code version, an EMV payload,
or not ours. Pure: takes text, returns a description; never verifies or charges."""

from __future__ import annotations

from typing import Any

from shared.emv.cpm import decode_cpm
from shared.errors import CodeMalformed
from shared.versions.registry import route


def describe(text: str) -> dict[str, Any]:
    """A JSON-ready description of `text`. Never raises for any input."""
    preview = text if len(text) <= 48 else text[:44] + "..."
    info: dict[str, Any] = {"text_preview": preview, "length": len(text)}
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
    if text.startswith("000201"):
        return {"kind": "emv_mpm", "note": "merchant-presented QR (decoded in a later release)"}
    return {"kind": "not_ours", "note": "not a payment code of any live version"}
