"""The wallet a phone app embeds: enrolled devices, counters, clock offset, code generation.

Making a code needs no network. Time is a parameter (`local_now_s`); the wallet adds the clock
offset it learned from the server, so a phone whose clock is off still makes codes the server
accepts. Each code's counter is saved before the code is returned: a crash can skip a counter,
never repeat one.
"""

from __future__ import annotations

import base64
import binascii
import copy
import fcntl
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paycode.client.keystore import KEYSTORE_NAME, Keystore, passphrase_for
from paycode.shared.binding import MerchantBinding
from paycode.shared.code_keys import FIELD_OF_VERSION, CodeKey
from paycode.shared.codes import ErrorCode
from paycode.shared.enrollment import GrantInfo, read_grant
from paycode.shared.errors import CounterExhausted, WalletError
from paycode.shared.timestep import STEP_SECONDS, seconds_left_in_step, step_at
from paycode.shared.versions.base import DeviceCredential, Flags, Rng
from paycode.shared.versions.registry import VERSIONS, by_name

DOCUMENT_VERSION = 1
LOCK_NAME = "wallet.lock"
"""Beside the keystore: serialises read-change-save between wallet processes on one home."""
COUNTER_STEPS_KEPT = 8
"""Steps whose counters are remembered, so a clock stepping back cannot repeat a code."""
DEFAULT_VERSION_ORDER = ("v1", "v2", "v3")
"""`code` without --version shows the numeric code: every scanner and a keyboard can read it."""
BOUND_VERSION_ORDER = ("v3", "v2")
"""A bound code without --version: v1 cannot be bound (no flags); v3 shares no secret."""
CLOCK_OFFSET_S_MAX = 10 * 365 * 86400
CLOCK_SYNC_AGE_S_MAX = 7 * 86400
"""`code` warns when the clock was last checked against the server longer ago than this. A
phone clock left to itself drifts about 1-2 s a day, so a week is ~15 s: well inside the
server's window (30-60 s, plus the drift it learns per device). Past it, or when the clock was
set by hand, codes may expire at the till; any online call (`balance`) re-syncs."""
CLOCK_SYNC_SLACK_S = 60.0
"""A local clock this far before the last sync was set back since: the offset is stale."""


@dataclass(frozen=True, slots=True)
class Enrollment:
    device_id: str
    credential: DeviceCredential
    counter_max: int


@dataclass(frozen=True, slots=True)
class PendingRotation:
    """A key rotation asked of the server and not yet answered, kept so a retry after a crash
    or a lost answer sends the same request (same Idempotency-Key, same new v3 key)."""

    version: str
    """The enrolled version whose device is being replaced (and revoked)."""
    target: str
    """The version the new device is enrolled on."""
    idempotency_key: str
    seed: bytes = field(repr=False)
    """The new v3 device's Ed25519 seed; empty for v1/v2 (the server makes their keys)."""


@dataclass(frozen=True, slots=True)
class GeneratedCode:
    text: str
    version: str
    symbology: str
    step: int
    counter: int
    refresh_in_s: float
    """Seconds until the wallet should show a fresh code (end of the step)."""
    binding: MerchantBinding | None = None
    """Where this code pays, when it is merchant-bound; None pays anywhere."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _enrollment_to_json(enrollment: Enrollment) -> dict[str, Any]:
    credential = enrollment.credential
    return {
        "device_id": enrollment.device_id,
        "version": credential.version,
        "handle": credential.handle.hex(),
        "secret": _b64(credential.secret),
        "hiding_key": _b64(credential.hiding_key),
        "seal_public_key": _b64(credential.seal_public_key),
        "counter_max": enrollment.counter_max,
    }


def _enrollment_from_json(raw: Mapping[str, Any]) -> Enrollment:
    try:
        credential = DeviceCredential(
            version=str(raw["version"]),
            handle=bytes.fromhex(raw["handle"]),
            secret=base64.b64decode(raw["secret"]),
            hiding_key=base64.b64decode(raw["hiding_key"]),
            seal_public_key=base64.b64decode(raw["seal_public_key"]),
        )
        return Enrollment(str(raw["device_id"]), credential, int(raw["counter_max"]))
    except (KeyError, TypeError, ValueError) as error:
        raise WalletError(
            "keystore holds a damaged enrollment", code=ErrorCode.WALLET_CORRUPT
        ) from error


class Wallet:
    """One wallet home directory. Not thread-safe; several processes may share a home, since
    every change is a locked read-change-save of the keystore (`_editing`)."""

    def __init__(self, home: Path, store: Keystore, document: dict[str, Any]) -> None:
        self.home = home
        self._store = store
        self._doc = _with_defaults(document)

    @classmethod
    def open(cls, home: Path) -> Wallet:
        """Open an existing wallet; raises WalletError(not_enrolled) when there is none.

        Checks for the keystore first, so a read-only command on an empty home creates nothing.
        """
        if not (home / KEYSTORE_NAME).exists():
            message = f"no wallet at {home}: run 'paycode-wallet enroll' first"
            raise WalletError(message, code=ErrorCode.NOT_ENROLLED)
        store, document = Keystore.open(home / KEYSTORE_NAME, passphrase_for(home))
        return cls(home, store, document)

    @classmethod
    def open_or_create(cls, home: Path) -> Wallet:
        if (home / KEYSTORE_NAME).exists():
            return cls.open(home)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(home, Keystore.create(home / KEYSTORE_NAME, passphrase_for(home)), {})

    # --- state ------------------------------------------------------------------------------

    @property
    def server_url(self) -> str | None:
        value = self._doc.get("server_url")
        return value if isinstance(value, str) else None

    @property
    def user(self) -> str | None:
        value = self._doc.get("user")
        return value if isinstance(value, str) else None

    @property
    def clock_offset_s(self) -> float:
        return float(self._doc["clock_offset_s"])

    def enrollments(self) -> dict[str, Enrollment]:
        raw = self._doc["enrollments"]
        return {version: _enrollment_from_json(item) for version, item in sorted(raw.items())}

    def enrollment(self, version: str | None = None, *, bindable: bool = False) -> Enrollment:
        """The enrollment for `version`, or the default one (`bindable`: the default among the
        versions that can make merchant-bound codes); raises WalletError(not_enrolled)."""
        enrolled = self.enrollments()
        if not enrolled:
            raise WalletError(
                "this wallet has no enrolled device: run 'paycode-wallet enroll'",
                code=ErrorCode.NOT_ENROLLED,
            )
        if version is None and bindable:
            version = next((v for v in BOUND_VERSION_ORDER if v in enrolled), None)
            if version is None:
                message = (
                    f"a bound code needs a v2 or v3 enrollment (enrolled: {', '.join(enrolled)})"
                )
                raise WalletError(message, code=ErrorCode.NOT_ENROLLED)
        if version is None:
            version = next(
                (v for v in DEFAULT_VERSION_ORDER if v in enrolled), next(iter(enrolled))
            )
        if version not in enrolled:
            have = ", ".join(enrolled)
            raise WalletError(
                f"not enrolled for {version} (enrolled: {have})", code=ErrorCode.NOT_ENROLLED
            )
        return enrolled[version]

    # --- changes ----------------------------------------------------------------------------

    @contextmanager
    def _editing(self) -> Iterator[None]:
        """Read, change and save the keystore under an exclusive lock on the home. Two wallet
        processes on one home (a `code` while `balance` runs) then never lose each other's
        changes: a lost counter would hand out a code twice."""
        with _home_lock(self.home):
            if self._store.path.exists():
                self._doc = _with_defaults(self._store.reload())
            yield
            self._store.save(self._doc)

    def section(self, name: str) -> dict[str, Any]:
        """A copy of one top-level part of the document (another module's, such as
        client.offline's), as saved now: another process may have changed it since."""
        if self._store.path.exists():
            self._doc = _with_defaults(self._store.reload())
        value = self._doc.get(name, {})
        return copy.deepcopy(value) if isinstance(value, dict) else {}

    @contextmanager
    def editing_section(self, name: str) -> Iterator[dict[str, Any]]:
        """One part of the document, fresh from disk, changed in place and saved with the rest
        in one atomic save under the home's lock. An exception inside saves nothing and leaves
        the part as it was: a half-made change is never seen."""
        with self._editing():
            section = self._doc.get(name)
            if not isinstance(section, dict):
                section = self._doc[name] = {}
            before = copy.deepcopy(section)
            try:
                yield section
            except BaseException:
                self._doc[name] = before
                raise

    def set_server(self, server_url: str, user: str) -> None:
        with self._editing():
            self._doc["server_url"] = server_url
            self._doc["user"] = user

    @property
    def qr_keys(self) -> dict[str, str]:
        """The server's merchant-QR public keys: key id -> base64url (client.merchant_qr)."""
        return dict(self._doc.get("qr_keys", {}))

    def set_qr_keys(self, keys: Mapping[str, str]) -> None:
        with self._editing():
            self._doc["qr_keys"] = dict(keys)

    def set_code_keys(self, keys: Mapping[str, CodeKey]) -> list[str]:
        """Install the server's current hiding or seal key for each enrolled version it names
        (docs/spec.md §7), in one atomic save; codes are made with it from now on. Returns the
        versions whose key changed; nothing is written when none did."""
        changed = [
            version
            for version, enrollment in self.enrollments().items()
            if version in keys
            and getattr(enrollment.credential, FIELD_OF_VERSION[version]) != keys[version].key
        ]
        if not changed:
            return []
        with self._editing():
            for version in changed:
                raw = self._doc["enrollments"].get(version)
                if isinstance(raw, dict):
                    raw[FIELD_OF_VERSION[version]] = _b64(keys[version].key)
        return changed

    def add_grant(self, grant: Mapping[str, object], *, ed25519_seed: bytes = b"") -> GrantInfo:
        """Install a server's enrollment grant (validated) and save it."""
        credential, info = read_grant(grant, ed25519_seed=ed25519_seed)
        enrollment = Enrollment(info.device_id, credential, info.counter_max)
        with self._editing():
            self._doc["enrollments"][info.version] = _enrollment_to_json(enrollment)
            self._doc["counters"].pop(info.version, None)
            self._doc["counter_floors"].pop(info.version, None)
        return info

    def record_clock_offset(
        self, offset_s: float | None, *, local_now_s: float | None = None
    ) -> None:
        """Learn server time - local time from an online contact (made at `local_now_s`, by
        default now), and remember when, so `clock_warning` can tell a stale offset."""
        if offset_s is None or abs(offset_s) > CLOCK_OFFSET_S_MAX:
            return
        with self._editing():
            self._doc["clock_offset_s"] = round(offset_s, 3)
            self._doc["clock_synced_at_s"] = round(
                time.time() if local_now_s is None else local_now_s, 3
            )

    @property
    def clock_synced_at_s(self) -> float | None:
        """Local time of the last online contact that taught the offset; None: never."""
        value = self._doc.get("clock_synced_at_s")
        return float(value) if isinstance(value, int | float) else None

    def clock_warning(self, local_now_s: float) -> str | None:
        """Why the learned clock offset may be wrong now, or None when it is fresh."""
        synced_at_s = self.clock_synced_at_s
        if synced_at_s is None:
            return "this wallet has never checked its clock against the server"
        age_s = local_now_s - synced_at_s
        if age_s < -CLOCK_SYNC_SLACK_S:
            return "this phone's clock was set back since the wallet last checked it"
        if age_s > CLOCK_SYNC_AGE_S_MAX:
            days = age_s / 86400
            return f"this wallet last checked its clock against the server {days:.0f} days ago"
        return None

    def remove_enrollment(self, version: str) -> None:
        """Forget one enrolled device (revoked on the server, or being replaced)."""
        with self._editing():
            for name in ("enrollments", "counters", "counter_floors", "rotations"):
                self._doc[name].pop(version, None)

    # --- key rotation: the old key is kept until the new grant is saved -------------------------

    def pending_rotation(self, version: str) -> PendingRotation | None:
        raw = self._doc["rotations"].get(version)
        if not isinstance(raw, dict):
            return None
        try:
            seed = base64.b64decode(str(raw["seed"]), validate=True)
            return PendingRotation(version, str(raw["target"]), str(raw["key"]), seed)
        except (KeyError, binascii.Error, ValueError) as error:
            raise WalletError(
                "keystore holds a damaged rotation", code=ErrorCode.WALLET_CORRUPT
            ) from error

    def begin_rotation(self, pending: PendingRotation) -> None:
        """Save the request before it is sent: if the answer is lost, the retry is the same."""
        with self._editing():
            self.enrollment(pending.version)  # raises not_enrolled
            self._doc["rotations"][pending.version] = {
                "target": pending.target,
                "key": pending.idempotency_key,
                "seed": _b64(pending.seed),
            }

    def abandon_rotation(self, version: str) -> None:
        """The server refused the rotation for good: nothing changed there."""
        with self._editing():
            self._doc["rotations"].pop(version, None)

    def finish_rotation(self, version: str, grant: Mapping[str, object]) -> GrantInfo:
        """Install the new device's grant in place of `version`'s, in one atomic save: the
        keystore holds the old device or the new one, never neither."""
        pending = self.pending_rotation(version)
        if pending is None:
            raise WalletError(f"no rotation of {version} is under way", code=ErrorCode.NOT_ENROLLED)
        credential, info = read_grant(grant, ed25519_seed=pending.seed)
        if info.version != pending.target:
            message = f"the server granted {info.version[:8]}, not {pending.target}"
            raise WalletError(message, code=ErrorCode.ENROLLMENT_INVALID)
        enrollment = Enrollment(info.device_id, credential, info.counter_max)
        with self._editing():
            self._doc["rotations"].pop(version, None)
            for name in ("enrollments", "counters", "counter_floors"):
                self._doc[name].pop(version, None)
                self._doc[name].pop(info.version, None)
            self._doc["enrollments"][info.version] = _enrollment_to_json(enrollment)
        return info

    def next_code(
        self,
        version: str | None = None,
        *,
        local_now_s: float,
        flags: int = 0,
        rng: Rng = os.urandom,
        binding: MerchantBinding | None = None,
    ) -> GeneratedCode:
        """A fresh single-use code. Offline. Raises CounterExhausted after counter_max codes.

        With `binding` (read from the merchant's collection QR, which needs no network) the
        code pays only at that merchant, or terminal: a copy relayed elsewhere is refused
        there without being used up. Raises WalletError(binding_unsupported) for v1."""
        enrollment = self.enrollment(version, bindable=binding is not None)
        codec = by_name(enrollment.credential.version)
        if binding is not None and not codec.bindable:
            message = f"{codec.version} codes cannot be merchant-bound: use --version v2 or v3"
            raise WalletError(message, code=ErrorCode.BINDING_UNSUPPORTED)
        device_now_s = local_now_s + self.clock_offset_s
        step = step_at(device_now_s, STEP_SECONDS)
        with self._editing():
            counter = self._claim_counter(codec.version, step, enrollment.counter_max, device_now_s)
        digest = b"" if binding is None else binding.digest
        if binding is not None:
            flags |= Flags.MERCHANT_BOUND
        text = codec.generate(
            enrollment.credential, step=step, counter=counter, flags=flags, rng=rng, binding=digest
        )
        refresh_in_s = seconds_left_in_step(device_now_s, STEP_SECONDS)
        return GeneratedCode(
            text, codec.version, codec.symbology, step, counter, refresh_in_s, binding
        )

    def _claim_counter(self, version: str, step: int, counter_max: int, device_now_s: float) -> int:
        counters: dict[str, int] = self._doc["counters"].setdefault(version, {})
        floors: dict[str, int] = self._doc["counter_floors"]
        if step <= floors.get(version, -1):
            # This step's counters were forgotten: handing out 0 again could repeat a code.
            wait_s = (floors[version] + 1) * STEP_SECONDS - device_now_s
            message = f"the clock is behind codes already made; next in {wait_s:.0f} s"
            raise CounterExhausted(message, retry_after_s=wait_s)
        counter = counters.get(str(step), 0)
        if counter > counter_max:
            wait_s = seconds_left_in_step(device_now_s, STEP_SECONDS)
            message = (
                f"all {counter_max + 1} codes of this time step are used; next in {wait_s:.0f} s"
            )
            raise CounterExhausted(message, retry_after_s=wait_s)
        counters[str(step)] = counter + 1
        for old in sorted(counters, key=int)[:-COUNTER_STEPS_KEPT]:
            floors[version] = max(floors.get(version, -1), int(old))
            del counters[old]
        return counter


def _with_defaults(document: dict[str, Any]) -> dict[str, Any]:
    document.setdefault("format", DOCUMENT_VERSION)
    for name in ("enrollments", "counters", "counter_floors", "rotations"):
        document.setdefault(name, {})
    document.setdefault("clock_offset_s", 0.0)
    return document


@contextmanager
def _home_lock(home: Path) -> Iterator[None]:
    """An exclusive advisory lock on the wallet home, held for one read-change-save."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(home / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def live_versions() -> list[str]:
    return [codec.version for codec in VERSIONS]
