"""Builders shared by the protocol tests: an in-memory 'server' of DeviceRecords and keys."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paycode.shared.versions.base import (
    DeviceCredential,
    DeviceRecord,
    VerifierKeys,
    VerifyContext,
    Window,
)

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
