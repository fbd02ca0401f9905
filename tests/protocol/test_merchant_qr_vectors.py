"""tests/vectors/merchant_qr.json (docs/spec.md, section 12): this implementation reproduces
every signed payload byte for byte from its fields and key, and reads each variant (as issued,
altered after signing, unsigned) with the verdict the file states."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.shared.emv.collection import CollectionCode, build_collection_payload, read_collection
from paycode.shared.emv.qr_signature import verify_signature

DOCUMENT = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "merchant_qr.json").read_text("utf-8")
)
VECTORS: list[dict[str, Any]] = DOCUMENT["vectors"]
KEY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(DOCUMENT["ed25519_seed_hex"]))
PUBLIC = {key_id: bytes.fromhex(hex_) for key_id, hex_ in DOCUMENT["public_keys"].items()}


def test_the_file_is_what_it_says() -> None:
    assert DOCUMENT["format"] == "paycode-merchant-qr-vectors/1"
    assert len(VECTORS) >= 3
    assert {key_id: KEY.public_key().public_bytes_raw() for key_id in PUBLIC} == PUBLIC


@pytest.mark.parametrize("vector", VECTORS, ids=[v["label"] for v in VECTORS])
def test_payload_is_reproduced_byte_for_byte(vector: dict[str, Any]) -> None:
    code = CollectionCode(**vector["fields"])
    payload = build_collection_payload(code, lambda m: (vector["key_id"], KEY.sign(m)))
    assert payload == vector["payload"]
    read = read_collection(payload)
    assert read.signature is not None
    assert read.signature.message.hex() == vector["signed_message_hex"]
    assert read.signature.signature.hex() == vector["signature_hex"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["label"] for v in VECTORS])
def test_every_variant_reads_with_its_verdict(vector: dict[str, Any]) -> None:
    verdicts = {
        variant["name"]: str(
            verify_signature(read_collection(variant["payload"]).signature, PUBLIC)
        )
        for variant in vector["variants"]
    }
    assert verdicts == {variant["name"]: variant["verdict"] for variant in vector["variants"]}
    assert verdicts == {"as issued": "verified", "altered": "altered", "unsigned": "unsigned"}
