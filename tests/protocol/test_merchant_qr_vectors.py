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
from paycode.shared.emv.qr_signature import b64url, from_b64url, verify_signature

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


@pytest.mark.parametrize(
    "respell",
    [
        lambda text: text[:10] + "=" + text[10:],
        lambda text: text[:10] + "!" + text[10:],
        lambda text: text.replace("-", "+").replace("_", "/"),
        lambda text: text[:-1] + chr(ord(text[-1]) + 1),
    ],
    ids=["padding inside", "junk inside", "standard alphabet", "stray low bits"],
)
def test_a_respelled_signature_is_malformed_not_verified(respell: Any) -> None:
    """Found by the JavaScript port: the lenient decoder read a signature re-spelled in the
    payload as the same bytes, so an edited payload still read as verified."""
    signature = bytes(range(64))
    text = b64url(signature)
    assert from_b64url(text) == signature
    assert from_b64url(respell(text)) is None
    assert from_b64url(text + "=") is None and from_b64url(text + "\n") is None
