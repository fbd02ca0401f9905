"""Code generation and verification per version, next to the raw primitive, in one run.

    python -m bench.bench_codes [--rounds 7] [--devices 1000,100000]

Each round times the raw primitive, the version's crypto floor (every primitive call its
verification must make), generation and verification back to back, and the reported ratio is
the median of the per-round ratios: this machine is shared and noisy, so only ratios measured
side by side mean anything. Verification is also measured with different numbers of enrolled
devices: resolution is one index lookup, so the cost must not grow.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hmac
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyotp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from paycode.shared.enrollment import new_ed25519_seed
from paycode.shared.prf import aes_block
from paycode.shared.verify import verify_code
from paycode.shared.versions.base import (
    Accepted,
    DeviceCredential,
    DeviceRecord,
    VerifierKeys,
    VerifyContext,
)
from paycode.shared.versions.registry import VERSIONS, by_name

TARGET_RATIO = 2.0
Op = Callable[[], object]


def per_op_s(op: Op, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        op()
    return (time.perf_counter() - start) / n


@dataclass
class Fixture:
    """Keys, one credential per version, and a device table of the requested size."""

    keys: VerifierKeys
    credentials: dict[str, DeviceCredential]
    table: dict[tuple[str, bytes], DeviceRecord]

    def context(self, now_s: float) -> VerifyContext:
        return VerifyContext(now_s, lambda v, h: self.table.get((v, h)), self.keys)


def build_fixture(devices: int) -> Fixture:
    seal = X25519PrivateKey.generate()
    hiding = {"v1": os.urandom(32), "v2": os.urandom(32)}
    keys = VerifierKeys({v: (k,) for v, k in hiding.items()}, (seal.private_bytes_raw(),))
    table: dict[tuple[str, bytes], DeviceRecord] = {}
    credentials: dict[str, DeviceCredential] = {}
    seal_public = seal.public_key().public_bytes_raw()
    shared_public = new_ed25519_seed()[1]  # filler records need no distinct v3 keys
    for codec in VERSIONS:
        for index in range(devices):
            handle = codec.new_handle()
            if codec.version == "v3":
                if index == 0:
                    seed, public = new_ed25519_seed()
                    credentials["v3"] = DeviceCredential(
                        "v3", handle, seed, seal_public_key=seal_public
                    )
                else:
                    public = shared_public
                table[("v3", handle)] = DeviceRecord(f"d{index}", handle, public)
            else:
                device_key = os.urandom(32)
                if index == 0:
                    credentials[codec.version] = DeviceCredential(
                        codec.version, handle, device_key, hiding_key=hiding[codec.version]
                    )
                table[(codec.version, handle)] = DeviceRecord(f"d{index}", handle, device_key)
    return Fixture(keys, credentials, table)


def primitives() -> dict[str, Op]:
    key, message = os.urandom(32), os.urandom(30)
    signer = Ed25519PrivateKey.generate()
    public, signature = signer.public_key(), signer.sign(message)
    server, peer = X25519PrivateKey.generate(), X25519PrivateKey.generate().public_key()
    aead_key = os.urandom(32)
    sealed = ChaCha20Poly1305(aead_key).encrypt(bytes(12), os.urandom(15), b"aad")

    def v3_floor() -> None:
        secret = server.exchange(peer)
        HKDF(hashes.SHA256(), 32, salt=message, info=b"i").derive(secret)
        ChaCha20Poly1305(aead_key).decrypt(bytes(12), sealed, b"aad")
        public.verify(signature, message)

    totp = pyotp.TOTP(pyotp.random_base32(), digest="sha256")
    totp_now = time.time()
    totp_code = totp.at(totp_now)

    return {
        "pyotp_verify": lambda: totp.verify(totp_code, for_time=totp_now),
        "hmac": lambda: hmac.digest(key, message, "sha256"),
        "hmac+aes": lambda: (hmac.digest(key, message, "sha256"), aes_block(key, message[:16])),
        "ed25519_verify": lambda: public.verify(signature, message),
        "ed25519_sign": lambda: signer.sign(message),
        "v3_floor": v3_floor,
    }


PRIMITIVE_FOR = {"v1": "hmac", "v2": "hmac", "v3": "ed25519_verify"}
FLOOR_FOR = {"v1": "hmac+aes", "v2": "hmac+aes", "v3": "v3_floor"}
GEN_PRIMITIVE_FOR = {"v1": "hmac", "v2": "hmac", "v3": "ed25519_sign"}


def measure_version(
    version: str, fixture: Fixture, prims: dict[str, Op], rounds: int
) -> dict[str, float]:
    codec, credential = by_name(version), fixture.credentials[version]
    now_s = time.time()
    step = int(now_s // 30)
    ctx = fixture.context(now_s)
    code = codec.generate(credential, step=step, counter=1)
    assert isinstance(verify_code(code, ctx), Accepted)
    n = 300 if version == "v3" else 20_000
    names = ("prim", "floor", "gen_prim", "gen", "verify", "totp")
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        samples["totp"].append(per_op_s(prims["pyotp_verify"], n))
        samples["prim"].append(per_op_s(prims[PRIMITIVE_FOR[version]], n))
        samples["floor"].append(per_op_s(prims[FLOOR_FOR[version]], n))
        samples["gen_prim"].append(per_op_s(prims[GEN_PRIMITIVE_FOR[version]], n))
        samples["gen"].append(per_op_s(lambda: codec.generate(credential, step=step, counter=1), n))
        samples["verify"].append(per_op_s(lambda: verify_code(code, ctx), n))

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(samples[a], samples[b], strict=True))

    return {
        "verify_us": statistics.median(samples["verify"]) * 1e6,
        "prim_us": statistics.median(samples["prim"]) * 1e6,
        "floor_us": statistics.median(samples["floor"]) * 1e6,
        "gen_us": statistics.median(samples["gen"]) * 1e6,
        "gen_prim_us": statistics.median(samples["gen_prim"]) * 1e6,
        "verify_vs_prim": ratio("verify", "prim"),
        "verify_vs_floor": ratio("verify", "floor"),
        "gen_vs_prim": ratio("gen", "gen_prim"),
        "verify_vs_totp": ratio("verify", "totp"),
    }


def print_versions(results: dict[str, dict[str, float]]) -> None:
    print(
        f"{'version':<8}{'verify/s':>10}{'prim/s':>10}{'x prim':>8}{'x floor':>9}{'x pyotp':>9}"
        f"{'gen/s':>10}{'x gen prim':>11}  primitive"
    )
    for version, r in results.items():
        verdict = "meets" if r["verify_vs_prim"] <= TARGET_RATIO else "misses"
        print(
            f"{version:<8}{1e6 / r['verify_us']:>10.0f}{1e6 / r['prim_us']:>10.0f}"
            f"{r['verify_vs_prim']:>8.2f}{r['verify_vs_floor']:>9.2f}{r['verify_vs_totp']:>9.2f}"
            f"{1e6 / r['gen_us']:>10.0f}"
            f"{r['gen_vs_prim']:>11.2f}  {PRIMITIVE_FOR[version]} ({verdict} <= {TARGET_RATIO}x)"
        )
    print("x prim: verify time / one raw primitive call; x floor: / every primitive call the")
    print("verification must make (v1/v2: HMAC + AES block; v3: X25519 + HKDF + AEAD + Ed25519);")
    print("x pyotp: / pyotp.TOTP(sha256).verify of a plain 6-digit TOTP (no hiding, no lookup).")


def measure_scaling(sizes: list[int], rounds: int) -> dict[str, dict[str, float]]:
    fixtures = {size: build_fixture(size) for size in sizes}
    print(f"\nverification vs enrolled devices per version ({', '.join(map(str, sizes))}):")
    print("(in memory: the lookup is a dict; bench_devices measures the PostgreSQL index)")
    result: dict[str, dict[str, float]] = {}
    for codec in VERSIONS:
        n = 300 if codec.version == "v3" else 20_000
        codes = {}
        for size, fixture in fixtures.items():
            now_s = time.time()
            ctx = fixture.context(now_s)
            code = codec.generate(
                fixture.credentials[codec.version], step=int(now_s // 30), counter=2
            )
            codes[size] = (code, ctx)
        per_size: dict[int, list[float]] = {size: [] for size in sizes}
        for _ in range(rounds):
            for size, (code, ctx) in codes.items():
                per_size[size].append(per_op_s(lambda c=code, x=ctx: verify_code(c, x), n))
        base = statistics.median(per_size[sizes[0]])
        cells = [f"{size}: {statistics.median(per_size[size]) * 1e6:.1f} us" for size in sizes]
        growth = statistics.median(per_size[sizes[-1]]) / base
        print(f"  {codec.version}: " + ", ".join(cells) + f"  -> {growth:.2f}x (target <= 1.2x)")
        result[codec.version] = {
            str(size): statistics.median(per_size[size]) * 1e6 for size in sizes
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--devices", default="1000,100000", help="comma-separated table sizes")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, rounds={args.rounds}")
    prims = primitives()
    fixture = build_fixture(10)
    results = {
        codec.version: measure_version(codec.version, fixture, prims, args.rounds)
        for codec in VERSIONS
    }
    print_versions(results)
    scaling = measure_scaling([int(s) for s in args.devices.split(",")], max(3, args.rounds // 2))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "rounds": args.rounds,
                    "target_ratio": TARGET_RATIO,
                    "primitive_for": PRIMITIVE_FOR,
                    "gen_primitive_for": GEN_PRIMITIVE_FOR,
                    "versions": results,
                    "in_memory_scaling_us": scaling,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
