"""Which national scheme issued a Merchant-Presented QR payload, told by its merchant accounts.

EMVCo leaves tags 26-51 to payment networks: each fills one template whose sub-tag 00 is a
globally unique identifier (a reverse domain name or an EMV AID). The identifier, not the tag
number, names the network: PIX uses 26 and PromptPay 29 while VietQR uses 38. Pure lookup, no
I/O; an unknown identifier yields None rather than a guess.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class SchemeGuid:
    """One identifier a scheme writes in sub-tag 00; `prefix` matches AIDs that go on."""

    scheme: str
    guid: str
    prefix: bool = False

    def matches(self, found: str) -> bool:
        """Case-insensitive: PIX payloads spell the same domain both ways in the wild."""
        wanted, seen = self.guid.casefold(), found.casefold()
        return seen.startswith(wanted) if self.prefix else seen == wanted


SCHEME_GUIDS: Final[tuple[SchemeGuid, ...]] = (
    SchemeGuid("paycode", "dev.paycode"),
    SchemeGuid("pix", "br.gov.bcb.pix"),
    SchemeGuid("promptpay", "A000000677", prefix=True),
    SchemeGuid("paynow", "SG.PAYNOW"),
    SchemeGuid("sgqr", "SG.SGQR"),
    SchemeGuid("qris", "ID.CO.QRIS.WWW"),
    SchemeGuid("vietqr", "A000000727", prefix=True),
    SchemeGuid("hk_fps", "hk.com.hkicl"),
    SchemeGuid("duitnow", "A0000006150001", prefix=True),
    SchemeGuid("bharat_qr", "A000000524", prefix=True),
)
"""Earlier entries win when a payload names several networks: an SGQR poster carries PayNow in
26 and the SGQR registry in 51, and PayNow is what the consumer pays through."""

_QRIS_ISSUER_PREFIX = "id."
_QRIS_ISSUER_SUFFIX = ".www"
"""QRIS issuers name themselves like "ID.CO.SHOPEE.WWW" or "ID.DANA.WWW"; a payload naming only
an issuer (no "ID.CO.QRIS.WWW" template) is still a QRIS payload."""


def recognize(guids: Iterable[str]) -> str | None:
    """The scheme named by the first matching identifier in `SCHEME_GUIDS` order, else None."""
    found = tuple(guids)
    for entry in SCHEME_GUIDS:
        if any(entry.matches(guid) for guid in found):
            return entry.scheme
    if any(_is_qris_issuer(guid) for guid in found):
        return "qris"
    return None


def _is_qris_issuer(guid: str) -> bool:
    folded = guid.casefold()
    return folded.startswith(_QRIS_ISSUER_PREFIX) and folded.endswith(_QRIS_ISSUER_SUFFIX)
