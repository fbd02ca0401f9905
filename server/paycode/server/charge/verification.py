"""The code of a charge, verified on the devices a worker cached (then on fresh rows), and what
a refusal carries into the transaction: the device a forgery aimed at, or the claim that burns
a genuine code refused for time (docs/spec.md §2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from paycode.server.database.directory import CachedDevice, Directory
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError, CodeMalformed
from paycode.shared.timestep import STEP_SECONDS
from paycode.shared.verify import verify_code
from paycode.shared.versions.base import (
    Accepted,
    DeviceRecord,
    Rejected,
    VerifierKeys,
    VerifyContext,
    VersionStatus,
    Window,
)
from paycode.shared.versions.registry import DEFAULT_STATUS

DRIFT_STEPS_MAX = 10
"""A device clock followed up to 5 minutes off; further off, its codes expire (re-sync)."""
CLAIM_STEPS_KEPT = Window().steps_ahead + DRIFT_STEPS_MAX + 2
"""A claim outlives every moment its code could still verify; then the worker purges it."""


def learned_drift(observed_steps: int, current_steps: int) -> int:
    """A code shown one step after it was made is ordinary latency, not a slow clock: learning
    -1 from it would stretch that device's window past 60 s. Anything else moves the drift."""
    if observed_steps == current_steps - 1:
        return current_steps
    return max(-DRIFT_STEPS_MAX, min(DRIFT_STEPS_MAX, observed_steps))


def verify_charge_code(
    code: str,
    now_s: float,
    directory: Directory,
    keys: VerifierKeys,
    *,
    bindings: tuple[bytes, ...] = (),
    statuses: Mapping[str, VersionStatus] = DEFAULT_STATUS,
) -> tuple[Accepted, CachedDevice]:
    """Verify on cached device rows; a code that fails on them is judged again on fresh rows,
    since another worker may have learned a new drift for that device.

    `bindings` name this charging point: a merchant-bound code made for another one fails as
    merchant_mismatch before any claim, so the customer's code still pays where it belongs.
    `statuses` are the live version lifecycle (server.lifecycle): a retired version is refused
    before any device lookup."""
    served: dict[str, CachedDevice] = {}
    rejected: Rejected | None = None
    for fresh in (False, True):

        def lookup(version: str, handle: bytes, fresh: bool = fresh) -> DeviceRecord | None:
            found = directory.device(version, handle, fresh=fresh)
            if found is None:
                return None
            served[found.record.device_id] = found
            return found.record

        try:
            context = VerifyContext(now_s, lookup, keys, bindings=bindings)
            result = verify_code(code, context, statuses)
        except CodeMalformed as error:
            raise ApiError(ErrorCode.CODE_MALFORMED, error.message) from error
        if isinstance(result, Accepted):
            return result, served[result.device.device_id]
        rejected = result
        if not served:
            break
    assert rejected is not None
    suspect = rejected.suspect.device_id if rejected.suspect is not None else None
    burn = None
    if rejected.burn_key and rejected.device is not None:
        burn = Burn(rejected.burn_key.decode(), rejected.device.device_id, rejected.burn_step)
    raise CodeRefused(
        ErrorCode(rejected.reason), rejected.detail, suspect_device_id=suspect, burn=burn
    )


@dataclass(frozen=True, slots=True)
class Burn:
    """A genuine code refused for time, claimed anyway: it must never pay later."""

    claim_key: str
    device_id: str
    step: int

    @property
    def expires_at_s(self) -> float:
        return claim_expiry_s(self.step)


def claim_expiry_s(step: int) -> float:
    """When the claim of a code of `step` may go: it outlives every moment the code could
    verify (at most steps_back + DRIFT_STEPS_MAX steps after its step)."""
    return float((step + 1 + CLAIM_STEPS_KEPT) * STEP_SECONDS)


class CodeRefused(ApiError):
    """A well-formed code that does not pay; `suspect_device_id` names the enrolled device a
    forged one was aimed at (its tag did not check), for the per-device guard; `burn` is the
    claim a genuine code refused for time still makes."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        *,
        suspect_device_id: str | None,
        burn: Burn | None = None,
    ) -> None:
        super().__init__(code, detail)
        self.suspect_device_id = suspect_device_id
        self.burn = burn
