"""A charge's code verification on the worker's cached device rows, answering the same for a
handle nobody holds as for an enrolled device with a wrong tag (issue 19, item 13).

A guesser who holds a version's public parts (every v1/v2 phone has the hiding key; anyone can
seal a v3 envelope to the server's public key) picks the handle a code names. If the reply, the
guard's answer or the work done differed between "no such device" and "wrong tag", the charge
endpoint would tell them which handles are enrolled, and then which to aim at. So:

- a handle with no device is verified against a decoy record (a per-process random key): the
  same tag or signature check runs, and it fails;
- every handle a code names counts in the guard at this merchant, enrolled or not
  (paycode.server.safety.guard.handle_scope);
- every `code_invalid` carries one detail, and a v3 code that reads as bound elsewhere is
  `code_invalid` too: its signature cannot be checked without the binding it was made for, and
  anyone can seal a reading that names a device and sets the flag;
- a rejection is judged again on fresh rows only when it is `code_expired`: the one outcome a
  stale learned drift can cause, and one only a genuine code reaches.

What is left: a device this worker has cached is found without a database read, while a free
handle costs one index lookup (missing handles are not cached: a device enrolled a moment ago
must be found). That is a few hundred microseconds on a local database, against one charge's
own round trip, for handles whose devices paid at this worker recently.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.server.database.directory import CachedDevice, Directory
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError, CodeMalformed
from paycode.shared.verify import verify_code
from paycode.shared.versions.base import (
    Accepted,
    DeviceRecord,
    Reason,
    Rejected,
    VerifierKeys,
    VerifyContext,
    VersionStatus,
)
from paycode.shared.versions.registry import DEFAULT_STATUS

INVALID_DETAIL = (
    "code is not genuine: show a fresh one (a code bound to another merchant or terminal "
    "does not pay here either)"
)
DECOY_ID = ""
"""The decoy's device id: no real device has an empty id."""
SIGNED_VERSIONS = frozenset({"v3"})
"""Versions whose device key is an Ed25519 public key (the others: an HMAC key)."""
HANDLES_NAMED_MAX = 4
"""One reading per live server key (normally one, two during a rotation)."""

_DECOY_MAC_KEY = os.urandom(32)
_DECOY_PUBLIC_KEY = Ed25519PrivateKey.generate().public_key().public_bytes_raw()

NamedHandle = tuple[str, bytes]
"""(version, handle) a code's reading named, enrolled or not."""


def decoy(version: str, handle: bytes) -> DeviceRecord:
    """What a missing device is checked against: a key no one knows, so the check fails."""
    key = _DECOY_PUBLIC_KEY if version in SIGNED_VERSIONS else _DECOY_MAC_KEY
    return DeviceRecord(DECOY_ID, handle, key)


@dataclass(frozen=True, slots=True)
class Burn:
    """A genuine code refused for time, claimed anyway so it never pays later (docs/spec.md
    §2); its claim is kept as an accepted code's is (paycode.server.charge.planning)."""

    claim_key: str
    device_id: str
    step: int


class CodeRefused(ApiError):
    """A well-formed code that does not pay; `handles` are what its readings named, for the
    guard's per-handle counters; `burn` is the claim a genuine code refused for time makes."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        *,
        handles: tuple[NamedHandle, ...],
        burn: Burn | None = None,
    ) -> None:
        super().__init__(code, detail)
        self.handles = handles
        self.burn = burn


@dataclass
class _Lookups:
    directory: Directory
    fresh: bool = False
    served: dict[str, CachedDevice] = field(default_factory=dict)
    named: list[NamedHandle] = field(default_factory=list)

    def __call__(self, version: str, handle: bytes) -> DeviceRecord:
        if len(self.named) < HANDLES_NAMED_MAX and (version, handle) not in self.named:
            self.named.append((version, handle))
        found = self.directory.device(version, handle, fresh=self.fresh)
        if found is None:
            return decoy(version, handle)
        self.served[found.record.device_id] = found
        return found.record


def verify_charge_code(
    code: str,
    now_s: float,
    directory: Directory,
    keys: VerifierKeys,
    *,
    bindings: tuple[bytes, ...] = (),
    statuses: Mapping[str, VersionStatus] = DEFAULT_STATUS,
) -> tuple[Accepted, CachedDevice]:
    """The accepted code and its device's cached row; raises ApiError (CodeRefused for a
    well-formed code that does not pay).

    `bindings` name this charging point: a merchant-bound code made for another one fails
    before any claim, so the customer's code still pays where it belongs. `statuses` are the
    live version lifecycle (server.lifecycle): a retired version is refused before any lookup."""
    lookups = _Lookups(directory)
    rejected: Rejected | None = None
    for fresh in (False, True):
        lookups.fresh = fresh
        try:
            context = VerifyContext(now_s, lookups, keys, bindings=bindings)
            result = _undecoyed(verify_code(code, context, statuses))
        except CodeMalformed as error:
            raise ApiError(ErrorCode.CODE_MALFORMED, error.message) from error
        if isinstance(result, Accepted):
            return result, lookups.served[result.device.device_id]
        rejected = result
        if result.reason != Reason.CODE_EXPIRED:
            break
    assert rejected is not None
    raise _refused(rejected, tuple(lookups.named))


def _undecoyed(result: Accepted | Rejected) -> Accepted | Rejected:
    """A decoy that verified (a guessed tag matching the decoy key, 1e-8 for v1) pays
    nothing: it is refused as any other wrong code."""
    if result.device is not None and result.device.device_id == DECOY_ID:
        return Rejected(result.version, Reason.CODE_INVALID, INVALID_DETAIL)
    return result


def _refused(rejected: Rejected, handles: tuple[NamedHandle, ...]) -> CodeRefused:
    reason, detail = rejected.reason, rejected.detail
    if reason == Reason.MERCHANT_MISMATCH and rejected.version in SIGNED_VERSIONS:
        reason = Reason.CODE_INVALID
    if reason == Reason.CODE_INVALID:
        detail = INVALID_DETAIL
    burn = None
    if rejected.burn_key and rejected.device is not None:
        burn = Burn(rejected.burn_key.decode(), rejected.device.device_id, rejected.burn_step)
    return CodeRefused(ErrorCode(reason), detail, handles=handles, burn=burn)
