"""Types every code version shares: what a wallet holds, what a server looks up, what comes back.

A code version is a module that implements `CodeVersion`. Verification never raises for a
well-formed code: a wrong, expired or replayed code is a `Rejected` result with a stable reason.
Only a string that is not a code of that version at all raises `CodeMalformed`.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from paycode.shared.binding import BINDING_BYTES
from paycode.shared.codes import ErrorCode
from paycode.shared.timestep import STEP_SECONDS

Rng = Callable[[int], bytes]
"""Source of random bytes (os.urandom by default); tests pass a deterministic one."""


class VersionStatus(enum.StrEnum):
    """Lifecycle of a code version (docs/spec.md §8): active -> deprecated -> retired."""

    ACTIVE = "active"
    DEPRECATED = "deprecated"
    RETIRED = "retired"


class Reason(enum.StrEnum):
    """Stable rejection codes (paycode.shared.codes) that verification can produce."""

    CODE_INVALID = ErrorCode.CODE_INVALID
    CODE_EXPIRED = ErrorCode.CODE_EXPIRED
    CODE_AMBIGUOUS = ErrorCode.CODE_AMBIGUOUS
    DEVICE_REVOKED = ErrorCode.DEVICE_REVOKED
    VERSION_RETIRED = ErrorCode.VERSION_RETIRED
    MERCHANT_MISMATCH = ErrorCode.MERCHANT_MISMATCH
    """A merchant-bound code presented where it was not made for (docs/spec.md §10)."""


class Flags(enum.IntFlag):
    """Per-code flags carried by versions that have room for them (v2, v3)."""

    NONE = 0
    USER_VERIFIED = 1
    """The wallet unlocked with the user's PIN or biometric before showing this code."""
    MERCHANT_BOUND = 2
    """The tag or signature also covers a merchant binding (shared.binding) the code does not
    carry: the code pays only at the merchant (or terminal) it was made for."""


KNOWN_FLAGS = int(Flags.USER_VERIFIED | Flags.MERCHANT_BOUND)
BOUND_FLAG = int(Flags.MERCHANT_BOUND)
"""As a plain int: `int & IntFlag` builds an enum member, a cost on every verification."""


@dataclass(frozen=True, slots=True)
class DeviceCredential:
    """What a provisioned wallet holds for one version. `repr` never shows key material."""

    version: str
    handle: bytes
    secret: bytes = field(repr=False)
    """v1/v2: the device's HMAC key. v3: the device's Ed25519 private key (32-byte seed)."""
    hiding_key: bytes = field(default=b"", repr=False)
    """v1/v2: the version's AES key that hides the handle (every phone of the version has it)."""
    seal_public_key: bytes = b""
    """v3: the server's X25519 public key the handle is sealed to."""


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """What the server knows about one enrolled device, found by (version, handle)."""

    device_id: str
    handle: bytes
    key: bytes = field(repr=False)
    """v1/v2: the device's HMAC key. v3: the device's Ed25519 public key."""
    drift_steps: int = 0
    """Learned offset of the device's clock, in steps (device step - server step)."""
    revoked: bool = False


DeviceLookup = Callable[[str, bytes], "DeviceRecord | None"]
"""(version, handle) -> the device, in O(1): an index lookup, never a scan."""


@dataclass(frozen=True, slots=True)
class VerifierKeys:
    """Server-side secrets, current first; older ones stay during a rotation."""

    hiding_keys: dict[str, tuple[bytes, ...]] = field(default_factory=dict, repr=False)
    """version -> AES-256 hiding keys (v1, v2)."""
    seal_keys: tuple[bytes, ...] = field(default=(), repr=False)
    """X25519 private keys the v3 handle is sealed to."""


@dataclass(frozen=True, slots=True)
class Window:
    """Acceptance window around the step the server expects from this device: the only one,
    so a code's life is one unbroken stretch of at most 3 steps (docs/spec.md §2)."""

    steps_back: int = 1
    """A code shown at the end of its step is still accepted during the next one (<= 60 s)."""
    steps_ahead: int = 1
    """A device clock up to one step ahead of what the server learned is tolerated (then a
    code lives up to 90 s: the longest any code lives)."""


@dataclass(frozen=True, slots=True)
class VerifyContext:
    """Everything verification needs besides the code. `now_s` is a parameter, never read."""

    now_s: float
    lookup: DeviceLookup
    keys: VerifierKeys
    window: Window = Window()
    bindings: tuple[bytes, ...] = ()
    """Binding digests of the charging point (shared.binding.charging_point_bindings): what a
    merchant-bound code must have been made for. Empty: no bound code verifies here."""


class Accepted(NamedTuple):
    """A genuine code inside its window. The server must still claim it (single use).

    A NamedTuple rather than a frozen dataclass: it is built on every verification, and
    building one costs a fifth as much.
    """

    version: str
    device: DeviceRecord
    step: int
    counter: int
    flags: int
    drift_steps: int
    """Observed device step - server step; the server learns the device's drift from it."""
    deprecated: bool = False

    @property
    def claim_key(self) -> bytes:
        """Identity of this code for the single-use claim: one per (device, step, counter)."""
        return claim_key_of(self.version, self.device.handle, self.step, self.counter)


def claim_key_of(version: str, handle: bytes, step: int, counter: int) -> bytes:
    """`version ":" hex(handle) ":" step ":" counter` (docs/spec.md §3)."""
    return b"%s:%s:%d:%d" % (version.encode(), handle.hex().encode(), step, counter)


class Rejected(NamedTuple):
    """A well-formed code that does not pay. `device` is set only once the code proved genuine."""

    version: str
    reason: Reason
    detail: str
    device: DeviceRecord | None = None
    suspect: DeviceRecord | None = None
    """An enrolled device the reading named whose tag or signature did not check: the
    target of a forgery (or of a corrupted code). The server counts every handle a code
    names per merchant, enrolled or not (docs/spec.md §4.1), so this is for logs and tests."""
    burn_key: bytes = b""
    """The claim key of a genuine code refused for time: the server claims it anyway, so the
    code can never pay later (a code made on a fast clock would otherwise come into its
    window). Empty for every other refusal."""
    burn_step: int = 0
    """The step of that code, which decides how long its claim is kept."""


Verification = Accepted | Rejected


class RoutedVersion(Protocol):
    """What routing a scanned string needs of any version, device or offline
    (paycode.shared.versions.registry.route)."""

    version: str
    prefix: str
    symbology: str

    def matches(self, text: str) -> bool: ...

    def parse(self, text: str) -> object: ...


class CodeVersion(Protocol):
    """One code version: a module plus one registry line (paycode.shared.versions.registry)."""

    version: str
    """Short stable name: "v1", "v2", "v3"."""
    prefix: str
    """Leading characters that route a scanned string to this version."""
    handle_bytes: int
    """Size of the device handle the server indexes."""
    symbology: str
    """"numeric" (Code 128 + QR + keyboard) or "qr"."""
    counter_max: int
    """Highest counter in one step: how many codes a device can make per step."""
    bindable: bool
    """Whether codes can be merchant-bound: the version must carry flags (v1 has no room)."""

    def matches(self, text: str) -> bool: ...

    def new_handle(self, rng: Rng = os.urandom) -> bytes: ...

    def generate(
        self,
        credential: DeviceCredential,
        *,
        step: int,
        counter: int,
        flags: int = 0,
        rng: Rng = os.urandom,
        binding: bytes = b"",
    ) -> str:
        """`binding` (a MerchantBinding digest) is given exactly when flags has MERCHANT_BOUND."""
        ...

    def parse(self, text: str) -> object:
        """Check the layout (length, alphabet, check digit, container); raise CodeMalformed."""
        ...

    def verify(self, text: str, ctx: VerifyContext) -> Verification: ...


def judge_window(
    ctx: VerifyContext, version: str, device: DeviceRecord, *, step: int, counter: int, flags: int
) -> Verification:
    """The checks every version makes once a code has proved genuine for `device`.

    One window, around the step expected from the drift learned for this device: a second one
    (around the server's own step, for a wallet that re-synced) would give a code made on a
    clock the server follows a second life, up to minutes later. A wallet that re-synced
    resets its devices' drift by the signed call that re-synced it (docs/spec.md §2)."""
    if device.revoked:
        return Rejected(version, Reason.DEVICE_REVOKED, "device was revoked", device)
    window = ctx.window
    clock_steps = step - int(ctx.now_s // STEP_SECONDS)
    offset_steps = clock_steps - device.drift_steps
    if not -window.steps_back <= offset_steps <= window.steps_ahead:
        burn_key = claim_key_of(version, device.handle, step, counter)
        detail = expired_detail(offset_steps)
        return Rejected(
            version, Reason.CODE_EXPIRED, detail, device, burn_key=burn_key, burn_step=step
        )
    return Accepted(version, device, step, counter, flags, clock_steps)


def expired_detail(offset_steps: int) -> str:
    """What a till shows for a genuine code outside its window. No figure: the code is burned
    anyway, and how far off the clock is would tell whoever holds a code when to come back."""
    if offset_steps > 0:
        return (
            "the phone's clock is wrong (ahead of the server): sync it with an online call in "
            "the wallet, then show a fresh code"
        )
    return (
        "this code is too old, or the phone's clock is wrong (behind the server): show a fresh "
        "code; if it was just made, sync the clock with an online call in the wallet"
    )


def check_binding_arguments(flags: int, binding: bytes) -> None:
    """A generator's guard: the MERCHANT_BOUND flag and a binding digest come together."""
    if flags & ~KNOWN_FLAGS:
        raise ValueError("unknown flag bits")
    if bool(flags & BOUND_FLAG) != bool(binding):
        raise ValueError("the MERCHANT_BOUND flag and a binding go together")
    if binding and len(binding) != BINDING_BYTES:
        raise ValueError(f"a binding is {BINDING_BYTES} bytes")


def reads_as_bound(flags: int) -> bool:
    """Whether a reading whose tag or signature failed claims to be a bound code (with no
    unknown flag): it may be genuine and made for another charging point. The flags are not
    authenticated until the tag checks, so a corrupted flags byte can read this way too (v2's
    masking is malleable; v3's AEAD is not) and gets the same refusal: nothing pays, nothing is
    claimed."""
    return bool(flags & BOUND_FLAG) and not flags & ~KNOWN_FLAGS


def pick_single(
    version: str,
    matches: list[Verification],
    *,
    bound_elsewhere: bool = False,
    suspect: DeviceRecord | None = None,
) -> Verification:
    """Zero genuine candidates is invalid; two is ambiguous: never guess between devices.

    `bound_elsewhere`: some reading named an enrolled device and the MERCHANT_BOUND flag but
    verified under none of this charging point's bindings. A code bound to another merchant and
    a forgery that sets the flag look the same here, so neither proves a device; both get
    merchant_mismatch, and nothing is claimed, so the genuine code still pays where it belongs.
    """
    if not matches and bound_elsewhere:
        detail = "this code was made for another merchant or terminal"
        return Rejected(version, Reason.MERCHANT_MISMATCH, detail)
    if not matches:
        return Rejected(version, Reason.CODE_INVALID, "code is not genuine", suspect=suspect)
    if len(matches) > 1:
        return Rejected(version, Reason.CODE_AMBIGUOUS, "code matches more than one device")
    return matches[0]
