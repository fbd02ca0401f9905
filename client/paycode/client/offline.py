"""The wallet's offline allowance: taking it, the v4 codes it makes, handing it back.

docs/offline.md §2.1, §2.4, §3.5. What is kept, and how the keystore spells it, is
client.offline_state; the calls to the server are client.offline_calls. The order of the
saves here is what makes a crash harmless:

- the four seeds and the request's Idempotency-Key are saved before the request is sent: an
  answer lost on the way is fetched again with the very same request (Ed25519 proofs are
  deterministic), and the certificates are merged in when it comes;
- a code's counter and reservation are saved (one atomic save) before the code is signed: a
  crash skips a counter, never repeats one, and no certificate ever pays more than its total
  cap `T` nor more than `n` codes;
- a hand-back deletes the seeds before its report is sent, and keeps the report until the
  server answers it.

Time is a parameter (`local_now_s`): the wallet adds the clock offset it learned online, as
for every other code.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from paycode.client.offline_state import (
    CERTIFICATES_PER_ALLOWANCE,
    SECTION,
    Allowance,
    PendingReturn,
    PendingTake,
    allowance_from_json,
    allowance_to_json,
    allowances_in,
    money_text,
    pending_returns_in,
    pending_take_in,
    pending_take_to_json,
)
from paycode.client.wallet import GeneratedCode, Wallet
from paycode.shared.binding import MerchantBinding
from paycode.shared.codes import ErrorCode
from paycode.shared.enrollment import new_ed25519_seed
from paycode.shared.errors import WalletError
from paycode.shared.offline import PaymentFields, sign_payment
from paycode.shared.timestep import STEP_SECONDS, seconds_left_in_step, step_at
from paycode.shared.versions import v4_offline
from paycode.shared.versions.base import BOUND_FLAG, Rng


@dataclass(frozen=True, slots=True)
class OfflineCodeMade:
    code: GeneratedCode
    amount_limit_minor: int
    """The most this code may pay."""
    currency: str
    allowance_id: str
    certificate_index: int


def device_now_s(wallet: Wallet, local_now_s: float) -> float:
    """The server-corrected clock every offline decision uses."""
    return local_now_s + wallet.clock_offset_s


def allowances(wallet: Wallet) -> list[Allowance]:
    """The allowances this wallet holds, soonest expiry first."""
    return allowances_in(wallet.section(SECTION))


def pending_take(wallet: Wallet) -> PendingTake | None:
    return pending_take_in(wallet.section(SECTION))


def pending_returns(wallet: Wallet) -> list[PendingReturn]:
    return pending_returns_in(wallet.section(SECTION))


def live_allowances(wallet: Wallet, *, local_now_s: float) -> list[Allowance]:
    """Those that can still make a code now (not expired, not handed back)."""
    now = device_now_s(wallet, local_now_s)
    return [a for a in allowances(wallet) if any(h.usable_at(now) for h in a.certificates)]


# --- taking an allowance (§2.1) -----------------------------------------------------------


def begin_take(
    wallet: Wallet, *, amount_minor: int, currency: str, rng: Rng = os.urandom
) -> PendingTake:
    """The request to send: the one saved earlier and never answered, when it asked for the
    same amount, else four fresh keys, saved before anything is sent. An unanswered request
    of another amount is `offline_pending`: its answer may hold money set aside already."""
    seeds = tuple(new_ed25519_seed(rng)[0] for _ in range(CERTIFICATES_PER_ALLOWANCE))
    fresh = PendingTake(
        str(uuid.uuid4()), wallet.enrollment().device_id, amount_minor, currency, seeds
    )
    with wallet.editing_section(SECTION) as section:
        waiting = pending_take_in(section)
        if waiting is None:
            section["pending_take"] = pending_take_to_json(fresh)
    if waiting is None:
        return fresh
    if (waiting.amount_minor, waiting.currency) == (amount_minor, currency):
        return waiting
    asked = money_text(waiting.amount_minor, waiting.currency)
    message = (
        f"an allowance of {asked} was asked for and its answer never came: "
        f"take {asked} again (the same request is sent) before another amount"
    )
    raise WalletError(message, code=ErrorCode.OFFLINE_PENDING)


def abandon_take(wallet: Wallet) -> None:
    """The server refused the request for good (nothing was set aside): forget its keys."""
    with wallet.editing_section(SECTION) as section:
        section.pop("pending_take", None)


def finish_take(wallet: Wallet, allowance: Allowance) -> None:
    """Store the answered allowance (checked by offline_calls.read_answer, its seeds in) and
    drop the request, in one save."""
    with wallet.editing_section(SECTION) as section:
        section.setdefault("allowances", {})[allowance.allowance_id] = allowance_to_json(allowance)
        section.pop("pending_take", None)


# --- making a code (§3.5) -------------------------------------------------------------------


def _unavailable(
    held: Sequence[Allowance], amount_minor: int | None, device_now: float
) -> WalletError:
    """Why no certificate can make this code, as the stable code the user can act on."""
    seeded = [a for a in held if any(h.seed is not None for h in a.certificates)]
    if not seeded:
        message = "this wallet holds no offline allowance: run 'paycode-wallet offline take'"
        return WalletError(message, code=ErrorCode.OFFLINE_NONE)
    usable = [h for a in seeded for h in a.certificates if h.usable_at(device_now)]
    if not usable:
        message = "the offline allowance has expired: take a new one online"
        return WalletError(message, code=ErrorCode.OFFLINE_EXPIRED)
    cap = max(h.fields.per_payment_cap_minor for h in usable)
    currency = usable[0].fields.currency
    if amount_minor is not None and amount_minor > cap:
        message = f"above the offline limit of {money_text(cap, currency)} a payment: pay online"
        return WalletError(message, code=ErrorCode.LIMIT_EXCEEDED)
    most = max(h.most_minor for h in usable)
    left = f"one code can pay at most {money_text(most, currency)} now" if most else "none is left"
    message = f"the offline allowance cannot cover this: {left}"
    return WalletError(message, code=ErrorCode.OFFLINE_EXHAUSTED)


def next_offline_code(
    wallet: Wallet,
    *,
    local_now_s: float,
    amount_minor: int | None = None,
    binding: MerchantBinding | None = None,
) -> OfflineCodeMade:
    """A v4 code from the next certificate (round-robin) that covers it. Offline.

    `amount_minor` is the amount typed (the code pays at most that); without it the code may
    pay up to what the certificate has left, within its per-payment cap. The counter and the
    reservation are saved before the code is signed."""
    now = device_now_s(wallet, local_now_s)
    if amount_minor is not None and amount_minor < 1:
        raise WalletError("an offline amount is positive", code=ErrorCode.AMOUNT_INVALID)
    with wallet.editing_section(SECTION) as section:
        held = allowances_in(section)
        chosen = next(
            (
                (allowance, found)
                for allowance in held
                if (found := allowance.choose(amount_minor, now)) is not None
            ),
            None,
        )
        if chosen is None:
            raise _unavailable(held, amount_minor, now)
        allowance, (index, limit) = chosen
        raw = section["allowances"][allowance.allowance_id]
        raw_cert = raw["certificates"][index]
        raw_cert["next_counter"] = allowance.certificates[index].next_counter + 1
        raw_cert["reserved_minor"] = allowance.certificates[index].reserved_minor + limit
        raw["last_used"] = index
    certificate = allowance.certificates[index]
    assert certificate.seed is not None  # usable_at checked it
    step = step_at(now, STEP_SECONDS)
    flags = BOUND_FLAG if binding is not None else 0
    payment = PaymentFields(certificate.next_counter, step, limit, flags)
    digest = b"" if binding is None else binding.digest
    signed = sign_payment(certificate.certificate, payment, certificate.seed, digest)
    text = v4_offline.encode(signed)
    refresh_in_s = seconds_left_in_step(now, STEP_SECONDS)
    code = GeneratedCode(
        text, v4_offline.VERSION, "qr", step, certificate.next_counter, refresh_in_s, binding
    )
    return OfflineCodeMade(code, limit, allowance.currency, allowance.allowance_id, index)


# --- hand-back and expiry (§2.4) ------------------------------------------------------------


def begin_return(wallet: Wallet, allowance_id: str) -> PendingReturn:
    """The hand-back report of one allowance, its seeds deleted and the report saved before
    anything is sent (a hand-back begun already is returned as it was saved)."""
    with wallet.editing_section(SECTION) as section:
        waiting = section.setdefault("pending_returns", {})
        if allowance_id not in waiting:
            raw = section.get("allowances", {}).get(allowance_id)
            if raw is None:
                raise WalletError(
                    f"this wallet holds no allowance {allowance_id[:40]!r}",
                    code=ErrorCode.OFFLINE_NONE,
                )
            allowance = allowance_from_json(allowance_id, raw)
            waiting[allowance_id] = {
                "key": str(uuid.uuid4()),
                "certificates": [held.report() for held in allowance.certificates],
            }
            for item in raw["certificates"]:
                item.pop("seed", None)
            raw["returning"] = True
        saved = waiting[allowance_id]
    return PendingReturn(allowance_id, str(saved["key"]), tuple(saved["certificates"]))


def finish_return(wallet: Wallet, allowance_id: str) -> None:
    """The server answered the hand-back: nothing of the allowance is left to keep."""
    with wallet.editing_section(SECTION) as section:
        section.get("pending_returns", {}).pop(allowance_id, None)
        section.get("allowances", {}).pop(allowance_id, None)


def forget_expired(wallet: Wallet, *, local_now_s: float) -> list[str]:
    """Delete the seeds of certificates past their expiry (no code of theirs can pay any
    more), and allowances the server has swept back (past `returns_at_s`, no hand-back
    waiting). Returns the allowances forgotten; nothing is saved when nothing changed."""
    now = device_now_s(wallet, local_now_s)
    stale = [
        allowance
        for allowance in allowances(wallet)
        if any(h.seed is not None and now >= h.fields.expiry_s for h in allowance.certificates)
        or now >= allowance.returns_at_s
    ]
    if not stale:
        return []
    forgotten: list[str] = []
    with wallet.editing_section(SECTION) as section:
        held = section.get("allowances", {})
        waiting = section.get("pending_returns", {})
        for allowance in allowances_in(section):
            raw = held[allowance.allowance_id]
            if now >= allowance.returns_at_s and allowance.allowance_id not in waiting:
                del held[allowance.allowance_id]
                forgotten.append(allowance.allowance_id)
                continue
            for item, cert in zip(raw["certificates"], allowance.certificates, strict=True):
                if now >= cert.fields.expiry_s:
                    item.pop("seed", None)
    return forgotten
