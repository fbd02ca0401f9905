"""The till's offline decision: docs/offline.md 4.2, steps 2 to 11.

With the line down a till accepts a v4 code alone, from its copy of the server's offline keys
(merchant_pos.offline_keys) and its own log (merchant_pos.offline_log). The checks run in the
order of 4.2 and the first failure is the verdict, a `SaleRefused` with a stable code: nothing
is logged and the sale is NOT PAID. Only when every check passes is the acceptance appended to
the log, which fsyncs before `decide` returns it: the caller shows PAID OFFLINE after that.

What a certificate and a code say, and whether their signatures hold, is
`paycode.shared.offline.verify_offline`; this module adds what needs the till's state: the
keys' age and `denied`, the log's replays and sums, and the merchant's limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from paycode.merchant_pos.offline_keys import OfflineKeys
from paycode.merchant_pos.offline_log import OfflineLog
from paycode.merchant_pos.offline_records import Acceptance
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import CodeMalformed
from paycode.shared.money import Money, format_amount
from paycode.shared.offline import OfflineCode, OfflineReason, OfflineRefused, verify_offline
from paycode.shared.versions import v4_offline

SYNC_DEADLINE_S = 259_200
"""D = G (section 5): past it an unsynced sale may find its escrow swept; the till takes no
offline sale until it synced, whatever `unsynced_age_max_s` the server set."""
SPLIT_WINDOW_S = 120
"""Step 9: a certificate that paid this till this recently may not pay it again yet, so one
sale cannot be split over codes to pass the floor limit."""


@dataclass(frozen=True)
class SaleRefused:
    """NOT PAID offline: `code` is stable (shared.codes), `detail` is for the log."""

    code: str
    detail: str


OfflineDecision = Acceptance | SaleRefused


@dataclass(frozen=True)
class OfflineRequest:
    """One sale as the offline decision sees it."""

    code_text: str
    amount_minor: int
    currency: str
    order: str
    now_s: float
    """Server time as the till knows it: its clock plus the offset stored with the keys."""
    local_now_s: float
    """The till's own clock: the keys' age is measured on it, as was their fetch."""


def is_offline_code(text: str) -> bool:
    """Whether `text` claims to be a v4 code (its prefix); parsing decides if it is one."""
    return isinstance(text, str) and text.startswith(v4_offline.PREFIX)


def _parse(text: str) -> OfflineCode | SaleRefused:
    """Step 2."""
    if not is_offline_code(text):
        return SaleRefused(ErrorCode.OFFLINE_CODE_NEEDED, "not a v4 code: no offline payment")
    try:
        return v4_offline.parse(text)
    except CodeMalformed as error:
        return SaleRefused(ErrorCode.CODE_MALFORMED, error.message)


def _checked_alone(
    code: OfflineCode, request: OfflineRequest, keys: OfflineKeys, bindings: Sequence[bytes]
) -> SaleRefused | None:
    """Steps 3 to 6: the keys' age, then what the certificate and code prove by themselves."""
    if not keys.ready(request.local_now_s):
        return SaleRefused(ErrorCode.OFFLINE_NOT_READY, "the offline keys are too old")
    if keys.currency != request.currency:
        return SaleRefused(ErrorCode.CURRENCY_MISMATCH, f"the till takes {keys.currency}")
    verdict = verify_offline(
        code,
        server_keys=keys.server_keys(request.now_s),
        now_s=request.now_s,
        bindings=bindings,
        currency=request.currency,
    )
    refused = verdict if isinstance(verdict, OfflineRefused) else None
    if refused is not None and refused.reason == OfflineReason.CERTIFICATE_INVALID:
        return SaleRefused(ErrorCode.CERTIFICATE_INVALID, refused.detail)
    if keys.denied_at(code.certificate.fields.cert_id.hex(), request.now_s):
        return SaleRefused(ErrorCode.CERTIFICATE_RETURNED, "the server no longer honours it")
    if refused is not None:
        return SaleRefused(ErrorCode(refused.reason), refused.detail)
    return None


def _single_use_and_caps(
    code: OfflineCode, request: OfflineRequest, keys: OfflineKeys, log: OfflineLog
) -> SaleRefused | None:
    """Steps 7 and 8: never twice at this till, never beyond F, p, the code's limit, T or n."""
    fields, payment = code.certificate.fields, code.payment
    cert = fields.cert_id.hex()
    if log.has_code(request.code_text) or log.has_counter(cert, payment.counter):
        return SaleRefused(ErrorCode.CODE_REPLAYED, "this till accepted this code already")
    floor_minor = keys.limits.floor_minor
    most_minor = min(floor_minor, fields.per_payment_cap_minor, payment.amount_limit_minor)
    if request.amount_minor > most_minor:
        most = format_amount(Money(most_minor, request.currency))
        return SaleRefused(
            ErrorCode.OFFLINE_LIMIT, f"this code pays at most {most} {request.currency} offline"
        )
    use = log.certificate_use(cert)
    if use.sum_minor + request.amount_minor > fields.total_cap_minor:
        return SaleRefused(
            ErrorCode.OFFLINE_LIMIT, "this code's allowance reached its total at this till"
        )
    if use.count >= fields.count_max:
        return SaleRefused(
            ErrorCode.OFFLINE_LIMIT, "this code's allowance reached its count at this till"
        )
    return None


def _one_payment_a_sale(
    code: OfflineCode, request: OfflineRequest, log: OfflineLog
) -> SaleRefused | None:
    """Step 9: a sale is not split over offline codes to pass the floor limit."""
    if log.by_order(request.order) is not None:
        return SaleRefused(ErrorCode.SPLIT_SALE, "this order was paid offline already")
    use = log.certificate_use(code.certificate.fields.cert_id.hex())
    if use.count and request.now_s - use.last_at_s < SPLIT_WINDOW_S:
        return SaleRefused(ErrorCode.SPLIT_SALE, "this certificate paid this till just now")
    return None


def _till_exposure(
    request: OfflineRequest, keys: OfflineKeys, log: OfflineLog
) -> SaleRefused | None:
    """Step 10: what this till holds unsynced stays within Q, the count and the age."""
    limits, unsynced = keys.limits, log.unsynced()
    if sum(a.amount_minor for a in unsynced) + request.amount_minor > limits.till_total_minor:
        return SaleRefused(ErrorCode.OFFLINE_TILL_FULL, "the unsynced sum would pass its limit")
    if len(unsynced) >= limits.till_count_max:
        return SaleRefused(ErrorCode.OFFLINE_TILL_FULL, "the unsynced count is at its limit")
    age_max_s = min(limits.unsynced_age_max_s, SYNC_DEADLINE_S)
    # The oldest by time, not by seq: a till whose clock was set back wrote later seqs earlier.
    if unsynced and request.now_s - min(a.at_s for a in unsynced) >= age_max_s:
        return SaleRefused(ErrorCode.OFFLINE_TILL_FULL, "an unsynced sale is too old: sync")
    return None


def decide(
    request: OfflineRequest,
    keys: OfflineKeys | None,
    log: OfflineLog,
    bindings: Sequence[bytes] | None = None,
) -> OfflineDecision:
    """Steps 2 to 11 of 4.2 for a sale whose online attempt could not end it (step 1 is the
    caller's). `keys` None: the till never fetched them. `bindings` default to the keys'
    merchant and terminal. An accepted sale is in the log, fsynced, when this returns."""
    parsed = _parse(request.code_text)
    if isinstance(parsed, SaleRefused):
        return parsed
    if keys is None:
        return SaleRefused(ErrorCode.OFFLINE_NOT_READY, "no offline keys: go online once")
    chosen = keys.bindings() if bindings is None else bindings
    refused = _checked_alone(parsed, request, keys, chosen)
    refused = refused or _single_use_and_caps(parsed, request, keys, log)
    refused = refused or _one_payment_a_sale(parsed, request, log)
    refused = refused or _till_exposure(request, keys, log)
    if refused is not None:
        return refused
    return log.accept(
        order=request.order,
        cert=parsed.certificate.fields.cert_id.hex(),
        counter=parsed.payment.counter,
        code=request.code_text,
        amount_minor=request.amount_minor,
        currency=request.currency,
        at_s=int(request.now_s),
    )
