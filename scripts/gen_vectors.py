"""Write tests/vectors/codes.json: (keys, time, counter, flags) -> code for every version.

Run once with `make vectors`; the tests load the file and check that this implementation still
produces and accepts every vector. A second implementation (Swift, Kotlin) checks itself
against the same file. Every input is derived from a fixed label, so the file is reproducible.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from paycode.shared.binding import MerchantBinding
from paycode.shared.enrollment import new_ed25519_seed
from paycode.shared.timestep import STEP_SECONDS, step_at
from paycode.shared.versions.base import DeviceCredential, Flags
from paycode.shared.versions.registry import by_name

OUT = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "codes.json"

# (version, unix time, counter, flags, label)
CASES: tuple[tuple[str, int, int, int, str], ...] = (
    ("v1", 1_763_888_400, 0, 0, "v1-a"),
    ("v1", 1_763_888_429, 1, 0, "v1-a"),
    ("v1", 1_763_888_430, 9, 0, "v1-b"),
    ("v1", 1_000_000_000, 3, 0, "v1-c"),
    ("v1", 2_000_000_000, 0, 0, "v1-d"),
    ("v2", 1_763_888_400, 0, 0, "v2-a"),
    ("v2", 1_763_888_400, 1, int(Flags.USER_VERIFIED), "v2-a"),
    ("v2", 2_000_000_015, 65535, 0, "v2-b"),
    ("v3", 1_763_888_400, 0, 0, "v3-a"),
    ("v3", 1_763_888_401, 1, int(Flags.USER_VERIFIED), "v3-a"),
    ("v3", 2_000_000_015, 65535, 0, "v3-b"),
)

BOUND = int(Flags.MERCHANT_BOUND)
# Merchant-bound codes (spec §10), after the unbound ones so those keep their places:
# (version, unix time, counter, flags, label, merchant id, terminal id or None)
BOUND_CASES: tuple[tuple[str, int, int, int, str, str, str | None], ...] = (
    ("v2", 1_763_888_400, 2, BOUND, "v2-a", "mer_corner_cafe", None),
    ("v2", 1_763_888_400, 3, BOUND | int(Flags.USER_VERIFIED), "v2-a", "mer_corner_cafe", "t1"),
    ("v3", 1_763_888_400, 2, BOUND, "v3-a", "mer_corner_cafe", None),
    ("v3", 1_763_888_401, 3, BOUND | int(Flags.USER_VERIFIED), "v3-a", "mer_corner_cafe", "t1"),
)


def derived(label: str, size: int = 32) -> bytes:
    """Deterministic test bytes: SHA-256 of a label (never use these keys for real)."""
    return hashlib.sha256(b"paycode test vector:" + label.encode()).digest()[:size]


def _handle(version: str, label: str) -> bytes:
    return by_name(version).new_handle(lambda n: derived("handle:" + label, n))


def _vector(
    version: str,
    unix_s: int,
    counter: int,
    flags: int,
    label: str,
    *,
    binding: MerchantBinding | None = None,
) -> dict[str, Any]:
    codec = by_name(version)
    digest = binding.digest if binding else b""
    step = step_at(unix_s, STEP_SECONDS)
    handle = _handle(version, label)
    vector: dict[str, Any] = {
        "version": version,
        "unix_time": unix_s,
        "step": step,
        "counter": counter,
        "flags": flags,
        "handle": handle.hex(),
    }
    if binding is not None:
        vector["binding"] = {"merchant_id": binding.merchant_id, "terminal_id": binding.terminal_id}
        vector["binding_digest"] = digest.hex()
    if version == "v3":
        seed, public = new_ed25519_seed(lambda n: derived("ed25519:" + label, n))
        seal = X25519PrivateKey.from_private_bytes(derived("seal-key"))
        ephemeral = derived(f"ephemeral:{label}:{unix_s}:{counter}")
        credential = DeviceCredential(
            version, handle, seed, seal_public_key=seal.public_key().public_bytes_raw()
        )
        vector |= {
            "ed25519_seed": seed.hex(),
            "ed25519_public": public.hex(),
            "seal_private": seal.private_bytes_raw().hex(),
            "seal_public": credential.seal_public_key.hex(),
            "ephemeral_private": ephemeral.hex(),
        }
        code = codec.generate(
            credential,
            step=step,
            counter=counter,
            flags=flags,
            rng=lambda n: ephemeral[:n],
            binding=digest,
        )
    else:
        device_key, hiding_key = derived("device-key:" + label), derived(f"hiding-key:{version}")
        credential = DeviceCredential(version, handle, device_key, hiding_key=hiding_key)
        vector |= {"device_key": device_key.hex(), "hiding_key": hiding_key.hex()}
        code = codec.generate(credential, step=step, counter=counter, flags=flags, binding=digest)
    vector["code"] = code
    return vector


def build() -> dict[str, Any]:
    return {
        "format": "paycode-vectors/1",
        "step_seconds": STEP_SECONDS,
        "note": "Test keys derived from public labels. Never use them outside tests.",
        "vectors": [_vector(*case) for case in CASES]
        + [
            _vector(
                version, unix_s, counter, flags, label, binding=MerchantBinding(merchant, terminal)
            )
            for version, unix_s, counter, flags, label, merchant, terminal in BOUND_CASES
        ],
    }


def main() -> int:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {len(CASES) + len(BOUND_CASES)} vectors to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
