"""An in-memory verifier for the hostile-input and forgery tests: real server keys (hiding keys,
an X25519 seal key) and a device table of real enrolled devices, whose credentials we hold,
among filler devices (as bench/bench_codes.py builds it), plus a charging point's bindings so
merchant-bound codes verify too. Everything is drawn from one seeded `random.Random`."""

from __future__ import annotations

import random
import time

from paycode.shared.binding import charging_point_bindings
from paycode.shared.versions.base import Flags
from paycode.shared.versions.registry import by_name
from tests.support.protocol import CodeServer

VERSIONS = ("v1", "v2", "v3")
REAL_DEVICES = 3
"""Enrolled devices per version whose credentials we hold: the genuine codes and the targets."""


def build_world(rng: random.Random, filler: int) -> CodeServer:
    """REAL_DEVICES real devices of each version first, then `filler` filler rows."""
    world = CodeServer.new(time.time(), rng.randbytes)
    world.bindings = charging_point_bindings("mer_forgery", "term_forgery")
    for version in VERSIONS:
        for index in range(REAL_DEVICES + filler):
            world.enroll(version, randbytes=rng.randbytes, filler=index >= REAL_DEVICES)
    return world


def genuine_codes(world: CodeServer, version: str, rng: random.Random, count: int) -> list[str]:
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
