"""An in-memory verifier for the hostile-input and forgery tests: real server keys (hiding keys,
an X25519 seal key) and a device table of real enrolled devices, whose credentials we hold,
among filler devices (as bench/bench_codes.py builds it), plus a charging point's bindings so
merchant-bound codes verify too. Everything is drawn from one seeded `random.Random`."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from paycode.shared.binding import charging_point_bindings
from paycode.shared.enrollment import new_ed25519_seed
from paycode.shared.timestep import STEP_SECONDS
from paycode.shared.versions.base import (
    DeviceCredential,
    DeviceRecord,
    Flags,
    VerifierKeys,
    VerifyContext,
)
from paycode.shared.versions.registry import by_name

VERSIONS = ("v1", "v2", "v3")
REAL_DEVICES = 3
"""Enrolled devices per version whose credentials we hold: the genuine codes and the targets."""


@dataclass
class World:
    """Server keys and a device table with real devices among filler ones (bench_codes style)."""

    now_s: float
    keys: VerifierKeys
    seal_public: bytes
    hiding: dict[str, bytes]
    table: dict[tuple[str, bytes], DeviceRecord] = field(default_factory=dict)
    credentials: dict[str, list[DeviceCredential]] = field(default_factory=dict)
    bindings: tuple[bytes, ...] = ()

    def context(self) -> VerifyContext:
        return VerifyContext(self.now_s, self._lookup, self.keys, bindings=self.bindings)

    def _lookup(self, version: str, handle: bytes) -> DeviceRecord | None:
        return self.table.get((version, handle))

    @property
    def step(self) -> int:
        return int(self.now_s // STEP_SECONDS)


def build_world(rng: random.Random, filler: int) -> World:
    seal = X25519PrivateKey.from_private_bytes(rng.randbytes(32))
    hiding = {"v1": rng.randbytes(32), "v2": rng.randbytes(32)}
    keys = VerifierKeys({v: (k,) for v, k in hiding.items()}, (seal.private_bytes_raw(),))
    world = World(time.time(), keys, seal.public_key().public_bytes_raw(), hiding)
    world.bindings = charging_point_bindings("mer_forgery", "term_forgery")
    filler_public = new_ed25519_seed(rng.randbytes)[1]
    for version in VERSIONS:
        codec = by_name(version)
        world.credentials[version] = []
        for index in range(REAL_DEVICES + filler):
            handle = codec.new_handle(rng.randbytes)
            real = index < REAL_DEVICES
            if version == "v3":
                seed, public = new_ed25519_seed(rng.randbytes) if real else (b"", filler_public)
                credential = DeviceCredential(
                    version, handle, seed, seal_public_key=world.seal_public
                )
                key = public
            else:
                key = rng.randbytes(32)
                credential = DeviceCredential(version, handle, key, hiding_key=hiding[version])
            world.table[(version, handle)] = DeviceRecord(f"{version}-{index}", handle, key)
            if real:
                world.credentials[version].append(credential)
    return world


def genuine_codes(world: World, version: str, rng: random.Random, count: int) -> list[str]:
    """Codes of the real devices, across the window, counters and (v2, v3) flags."""
    codec = by_name(version)
    codes = []
    for index in range(count):
        credential = world.credentials[version][index % REAL_DEVICES]
        step = world.step + (index % 3) - 1
        counter = rng.randrange(codec.counter_max + 1)
        flags, binding = 0, b""
        if codec.bindable and index % 4 == 1:
            flags = int(Flags.USER_VERIFIED)
        elif codec.bindable and index % 4 == 2:
            flags, binding = int(Flags.MERCHANT_BOUND), world.bindings[index % 2]
        codes.append(
            codec.generate(
                credential,
                step=step,
                counter=counter,
                flags=flags,
                binding=binding,
                rng=rng.randbytes,
            )
        )
    return codes
