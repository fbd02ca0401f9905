"""The wallet a phone app embeds: enrolled devices, counters, clock offset, code generation.

Making a code needs no network. Time is a parameter (`local_now_s`); the wallet adds the clock
offset it learned from the server, so a phone whose clock is off still makes codes the server
accepts. Each code's counter is saved before the code is returned: a crash can skip a counter,
never repeat one.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.keystore import KEYSTORE_NAME, Keystore, passphrase_for
from shared.binding import MerchantBinding
from shared.enrollment import GrantInfo, read_grant
from shared.errors import CounterExhausted, WalletError
from shared.timestep import STEP_SECONDS, seconds_left_in_step, step_at
from shared.versions.base import DeviceCredential, Flags, Rng
from shared.versions.registry import VERSIONS, by_name

DOCUMENT_VERSION = 1
COUNTER_STEPS_KEPT = 8
"""Steps whose counters are remembered, so a clock stepping back cannot repeat a code."""
DEFAULT_VERSION_ORDER = ("v1", "v2", "v3")
"""`code` without --version shows the numeric code: every scanner and a keyboard can read it."""
BOUND_VERSION_ORDER = ("v3", "v2")
"""A bound code without --version: v1 cannot be bound (no flags); v3 shares no secret."""
CLOCK_OFFSET_S_MAX = 10 * 365 * 86400


@dataclass(frozen=True, slots=True)
class Enrollment:
    device_id: str
    credential: DeviceCredential
    counter_max: int


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
        raise WalletError("keystore holds a damaged enrollment", code="wallet_corrupt") from error


class Wallet:
    """One wallet home directory. Not thread-safe: one process uses a home at a time."""

    def __init__(self, home: Path, store: Keystore, document: dict[str, Any]) -> None:
        self.home = home
        self._store = store
        self._doc = document
        self._doc.setdefault("format", DOCUMENT_VERSION)
        self._doc.setdefault("enrollments", {})
        self._doc.setdefault("counters", {})
        self._doc.setdefault("counter_floors", {})
        self._doc.setdefault("clock_offset_s", 0.0)

    @classmethod
    def open(cls, home: Path) -> Wallet:
        """Open an existing wallet; raises WalletError(not_enrolled) when there is none.

        Checks for the keystore first, so a read-only command on an empty home creates nothing.
        """
        if not (home / KEYSTORE_NAME).exists():
            message = f"no wallet at {home}: run 'paycode-wallet enroll' first"
            raise WalletError(message, code="not_enrolled")
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
                code="not_enrolled",
            )
        if version is None and bindable:
            version = next((v for v in BOUND_VERSION_ORDER if v in enrolled), None)
            if version is None:
                message = (
                    f"a bound code needs a v2 or v3 enrollment (enrolled: {', '.join(enrolled)})"
                )
                raise WalletError(message, code="not_enrolled")
        if version is None:
            version = next(
                (v for v in DEFAULT_VERSION_ORDER if v in enrolled), next(iter(enrolled))
            )
        if version not in enrolled:
            have = ", ".join(enrolled)
            raise WalletError(f"not enrolled for {version} (enrolled: {have})", code="not_enrolled")
        return enrolled[version]

    # --- changes ----------------------------------------------------------------------------

    def set_server(self, server_url: str, user: str) -> None:
        self._doc["server_url"] = server_url
        self._doc["user"] = user
        self._store.save(self._doc)

    def add_grant(self, grant: Mapping[str, object], *, ed25519_seed: bytes = b"") -> GrantInfo:
        """Install a server's enrollment grant (validated) and save it."""
        credential, info = read_grant(grant, ed25519_seed=ed25519_seed)
        enrollment = Enrollment(info.device_id, credential, info.counter_max)
        self._doc["enrollments"][info.version] = _enrollment_to_json(enrollment)
        self._doc["counters"].pop(info.version, None)
        self._doc["counter_floors"].pop(info.version, None)
        self._store.save(self._doc)
        return info

    def record_clock_offset(self, offset_s: float | None) -> None:
        """Learn server time - local time from an online contact."""
        if offset_s is None or abs(offset_s) > CLOCK_OFFSET_S_MAX:
            return
        self._doc["clock_offset_s"] = round(offset_s, 3)
        self._store.save(self._doc)

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
            raise WalletError(message, code="binding_unsupported")
        device_now_s = local_now_s + self.clock_offset_s
        step = step_at(device_now_s, STEP_SECONDS)
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
        self._store.save(self._doc)
        return counter


def live_versions() -> list[str]:
    return [codec.version for codec in VERSIONS]
