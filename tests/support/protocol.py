"""Builders shared by the protocol tests: an in-memory 'server' of DeviceRecords and keys
(CodeServer: the device table and keys, with the credentials of the wallets it enrolled)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from paycode.shared.enrollment import new_ed25519_seed
from paycode.shared.timestep import STEP_SECONDS
from paycode.shared.verify import verify_code
from paycode.shared.versions.base import (
    Accepted,
    DeviceCredential,
    DeviceRecord,
    Rejected,
    VerifierKeys,
    VerifyContext,
    Window,
)
from paycode.shared.versions.registry import by_name

VECTORS_PATH = Path(__file__).resolve().parents[1] / "vectors" / "codes.json"
DEFAULT_WINDOW = Window()


def load_vectors() -> list[dict[str, Any]]:
    document = json.loads(VECTORS_PATH.read_text())
    assert document["format"] == "paycode-vectors/1"
    vectors: list[dict[str, Any]] = document["vectors"]
    return vectors


@dataclass
class Registry:
    """The device table a server keeps, as a dict keyed (version, handle): O(1)."""

    records: dict[tuple[str, bytes], DeviceRecord] = field(default_factory=dict)
    lookups: int = 0

    def add(self, record: DeviceRecord, version: str) -> None:
        self.records[(version, record.handle)] = record

    def lookup(self, version: str, handle: bytes) -> DeviceRecord | None:
        self.lookups += 1
        return self.records.get((version, handle))

    def context(
        self,
        keys: VerifierKeys,
        now_s: float,
        window: Window = DEFAULT_WINDOW,
        bindings: tuple[bytes, ...] = (),
    ) -> VerifyContext:
        return VerifyContext(
            now_s=now_s, lookup=self.lookup, keys=keys, window=window, bindings=bindings
        )


def vector_binding(vector: dict[str, Any]) -> bytes:
    """The binding digest a vector's code was made for; empty for an unbound vector."""
    return bytes.fromhex(vector.get("binding_digest", ""))


def vector_bindings(vector: dict[str, Any]) -> tuple[bytes, ...]:
    """The charging point's bindings under which a vector verifies: its own, when bound."""
    return (vector_binding(vector),) if "binding" in vector else ()


def vector_setup(vector: dict[str, Any]) -> tuple[DeviceCredential, DeviceRecord, VerifierKeys]:
    """Credential (wallet side), record and keys (server side) for one vector."""
    version, handle = vector["version"], bytes.fromhex(vector["handle"])
    if version == "v3":
        credential = DeviceCredential(
            version,
            handle,
            bytes.fromhex(vector["ed25519_seed"]),
            seal_public_key=bytes.fromhex(vector["seal_public"]),
        )
        record = DeviceRecord(
            "dev-" + vector["handle"], handle, bytes.fromhex(vector["ed25519_public"])
        )
        keys = VerifierKeys(seal_keys=(bytes.fromhex(vector["seal_private"]),))
        return credential, record, keys
    device_key, hiding_key = (
        bytes.fromhex(vector["device_key"]),
        bytes.fromhex(vector["hiding_key"]),
    )
    credential = DeviceCredential(version, handle, device_key, hiding_key=hiding_key)
    record = DeviceRecord("dev-" + vector["handle"], handle, device_key)
    return credential, record, VerifierKeys(hiding_keys={version: (hiding_key,)})


@dataclass
class CodeServer:
    """One server's keys (v1/v2 hiding keys, the v3 seal key) and device table at `now_s`, with
    the credential of every wallet it enrolled; `bindings` are the charging point's."""

    now_s: float
    keys: VerifierKeys
    seal_public: bytes
    hiding: dict[str, bytes]
    registry: Registry = field(default_factory=Registry)
    credentials: dict[str, list[DeviceCredential]] = field(default_factory=dict)
    bindings: tuple[bytes, ...] = ()
    filler_public: bytes = b""

    @classmethod
    def new(cls, now_s: float, randbytes: Callable[[int], bytes] = os.urandom) -> CodeServer:
        seal = X25519PrivateKey.from_private_bytes(randbytes(32))
        hiding = {"v1": randbytes(32), "v2": randbytes(32)}
        keys = VerifierKeys({v: (k,) for v, k in hiding.items()}, (seal.private_bytes_raw(),))
        return cls(now_s, keys, seal.public_key().public_bytes_raw(), hiding)

    @property
    def step(self) -> int:
        return int(self.now_s // STEP_SECONDS)

    def enroll(
        self,
        version: str,
        *,
        drift_steps: int = 0,
        randbytes: Callable[[int], bytes] = os.urandom,
        filler: bool = False,
    ) -> DeviceCredential:
        """A new device in the table, its credential kept in `credentials` unless it is `filler`
        (a row among which the real devices hide; v3 fillers share one public key nobody
        holds the seed of, as a large table in bench/bench_codes.py does)."""
        handle = by_name(version).new_handle(randbytes)
        record_id = f"{version}-{len(self.registry.records)}"
        if version == "v3":
            seed, public = (b"", self._filler_public()) if filler else new_ed25519_seed(randbytes)
            credential = DeviceCredential(version, handle, seed, seal_public_key=self.seal_public)
            record = DeviceRecord(record_id, handle, public, drift_steps)
        else:
            key = randbytes(32)
            credential = DeviceCredential(version, handle, key, hiding_key=self.hiding[version])
            record = DeviceRecord(record_id, handle, key, drift_steps)
        self.registry.add(record, version)
        if not filler:
            self.credentials.setdefault(version, []).append(credential)
        return credential

    def _filler_public(self) -> bytes:
        if not self.filler_public:
            self.filler_public = new_ed25519_seed()[1]
        return self.filler_public

    def context(self, now_s: float | None = None) -> VerifyContext:
        now_s = self.now_s if now_s is None else now_s
        return self.registry.context(self.keys, now_s, bindings=self.bindings)

    def verify(self, code: str, now_s: float | None = None, **kwargs: Any) -> Accepted | Rejected:
        """verify_code at `now_s` (default: the server's); kwargs go to verify_code."""
        return verify_code(code, self.context(now_s), **kwargs)
