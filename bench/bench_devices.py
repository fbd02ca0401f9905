"""Verification cost with 1k, 100k and 1M enrolled devices, through the real device lookup on
PostgreSQL (figure 2 of `make bench`).

    python -m bench.bench_devices [--quick] [--json OUT]

One fresh PostgreSQL database per size, each with the real schema and that many devices of
every version (bulk-inserted filler rows, plus one real device per version). A verification is
`shared.verify.verify_code` with the server's own lookup (server.caches.Directory, uncached:
the unique (version, handle) index, then unsealing the device key), so what it measures is what
a charge pays for finding and checking a device. Sizes are measured in interleaved rounds and
the figure is the median per-round ratio to the smallest size: it must stay flat (<= 1.2x),
since resolution is one index lookup, never a scan.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import Engine, text

from paycode.server.database.directory import Directory
from paycode.server.database.engine import make_engine
from paycode.server.database.models import Base, Device, User
from paycode.server.safety.secretbox import SecretBox
from paycode.server.testing import postgres_database
from paycode.shared.enrollment import new_ed25519_seed
from paycode.shared.verify import verify_code
from paycode.shared.versions.base import Accepted, DeviceCredential, VerifierKeys, VerifyContext
from paycode.shared.versions.registry import VERSIONS, by_name

FULL_SIZES = (1_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 100_000)
ROUNDS = 9
VERIFICATIONS_PER_ROUND = 200
FLAT_RATIO_MAX = 1.2
INSERT_BATCH_ROWS = 200_000
FILLER_USER = "usr_filler"


def _filler_sql(version: str, handle_bytes: int) -> Any:
    """N devices of one version whose handles are the big-endian row numbers: distinct, and
    never the real device's random handle unless it is that small (checked)."""
    return text(
        "INSERT INTO devices (id, user_id, version, handle, key_id, key_sealed, public_key,"
        " drift_steps, label, created_at_s)"
        " SELECT :version || '_' || i, :user, :version,"
        f" decode(lpad(to_hex(i), {2 * handle_bytes}, '0'), 'hex'),"
        " 'mk1', '\\x00'::bytea, NULL, 0, 'filler', 0"
        " FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS i"
    )


def populate(engine: Engine, size: int, box: SecretBox, keys: VerifierKeys) -> dict[str, Any]:
    """The schema, `size` filler devices per version, and one real device per version; returns
    the real devices' credentials."""
    Base.metadata.create_all(engine)
    credentials: dict[str, DeviceCredential] = {}
    with engine.begin() as connection:
        connection.execute(
            User.__table__.insert().values(
                id=FILLER_USER, name="filler", password_hash="x", created_at_s=0.0
            )
        )
        for codec in VERSIONS:
            handle_bytes = len(codec.new_handle())
            for first in range(1, size + 1, INSERT_BATCH_ROWS):
                last = min(size, first + INSERT_BATCH_ROWS - 1)
                connection.execute(
                    _filler_sql(codec.version, handle_bytes),
                    {"version": codec.version, "user": FILLER_USER, "first": first, "last": last},
                )
            credentials[codec.version] = _real_device(connection, codec.version, box, keys)
        connection.execute(text("ANALYZE devices"))
    return credentials


def _real_device(
    connection: Any, version: str, box: SecretBox, keys: VerifierKeys
) -> DeviceCredential:
    codec = by_name(version)
    handle = codec.new_handle()
    assert int.from_bytes(handle, "big") > max(FULL_SIZES), "a real handle among the filler"
    device_id = f"real_{version}"
    if version == "v3":
        seed, public = new_ed25519_seed()
        values: dict[str, Any] = {"public_key": public}
        seal_public = X25519PrivateKey.from_private_bytes(keys.seal_keys[0]).public_key()
        credential = DeviceCredential(
            version, handle, seed, seal_public_key=seal_public.public_bytes_raw()
        )
    else:
        device_key = os.urandom(32)
        key_id, sealed = box.seal(device_key, row_id=device_id)
        values = {"key_id": key_id, "key_sealed": sealed}
        credential = DeviceCredential(
            version, handle, device_key, hiding_key=keys.hiding_keys[version][0]
        )
    connection.execute(
        Device.__table__.insert().values(
            id=device_id,
            user_id=FILLER_USER,
            version=version,
            handle=handle,
            drift_steps=0,
            label="real",
            created_at_s=0.0,
            **values,
        )
    )
    return credential


@contextlib.contextmanager
def databases(sizes: tuple[int, ...]) -> Iterator[list[str]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(postgres_database()) for _ in sizes]


def measure(sizes: tuple[int, ...]) -> dict[str, Any]:
    box = SecretBox({"mk1": os.urandom(32)}, "mk1")
    seal = X25519PrivateKey.generate()
    keys = VerifierKeys(
        {"v1": (os.urandom(32),), "v2": (os.urandom(32),)}, (seal.private_bytes_raw(),)
    )
    samples: dict[str, dict[int, list[float]]] = {
        codec.version: {size: [] for size in sizes} for codec in VERSIONS
    }
    with databases(sizes) as urls:
        engines = [make_engine(url) for url in urls]
        started = time.monotonic()
        setups = []
        for size, engine in zip(sizes, engines, strict=True):
            credentials = populate(engine, size, box, keys)
            setups.append((size, Directory(engine, box), credentials))
            print(f"  {size:>9} devices per version ready ({time.monotonic() - started:.0f} s)")
        for rnd in range(ROUNDS):  # sizes side by side per version: the noise hits all alike
            order = setups if rnd % 2 == 0 else list(reversed(setups))
            for codec in VERSIONS:
                for size, directory, credentials in order:
                    seconds = _verify_time(codec.version, directory, credentials, keys)
                    samples[codec.version][size].append(seconds)
        for engine in engines:
            engine.dispose()
    return _summary(samples, sizes)


def _verify_time(
    version: str, directory: Directory, credentials: dict[str, DeviceCredential], keys: VerifierKeys
) -> float:
    codec = by_name(version)
    now_s = time.time()

    def lookup(v: str, handle: bytes) -> Any:
        found = directory.device(v, handle, fresh=True)
        return None if found is None else found.record

    context = VerifyContext(now_s, lookup, keys)
    step = int(now_s // 30)
    # Verifying claims nothing, so one code can be checked again and again; the lookup is
    # uncached, so each check still reads the database.
    code = codec.generate(credentials[version], step=step, counter=0)
    started = time.perf_counter()
    for _ in range(VERIFICATIONS_PER_ROUND):
        assert isinstance(verify_code(code, context), Accepted)
    return (time.perf_counter() - started) / VERIFICATIONS_PER_ROUND


def _summary(samples: dict[str, dict[int, list[float]]], sizes: tuple[int, ...]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for version, per_size in samples.items():
        base = per_size[sizes[0]]
        result[version] = {
            str(size): {
                "verify_us": statistics.median(values) * 1e6,
                "vs_smallest": statistics.median(
                    value / first for value, first in zip(values, base, strict=True)
                ),
            }
            for size, values in per_size.items()
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 100k devices only")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    started = time.monotonic()
    print(f"verification through the PostgreSQL device lookup, sizes {sizes}:")
    result = measure(sizes)
    flat = True
    for version, per_size in result.items():
        cells = ", ".join(
            f"{size}: {cell['verify_us']:.0f} us ({cell['vs_smallest']:.2f}x)"
            for size, cell in per_size.items()
        )
        worst = max(cell["vs_smallest"] for cell in per_size.values())
        flat = flat and worst <= FLAT_RATIO_MAX
        print(f"  {version}: {cells}")
    print(f"flat (every size <= {FLAT_RATIO_MAX}x the smallest): {'yes' if flat else 'NO'}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "sizes": list(sizes),
                    "rounds": ROUNDS,
                    "verifications_per_round": VERIFICATIONS_PER_ROUND,
                    "flat_ratio_max": FLAT_RATIO_MAX,
                    "flat": flat,
                    "elapsed_s": round(time.monotonic() - started),
                    "versions": result,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
