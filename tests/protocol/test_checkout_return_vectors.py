"""tests/vectors/checkout_return.json (docs/spec.md, section 15): this implementation
reproduces every signed return byte for byte from its fields and key, reads each variant with
the verdict the file states, and the generator still writes exactly this file."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.shared.checkout_return import build_return, signed_message, verify_return
from paycode.shared.emv.qr_signature import b64url
from scripts import gen_checkout_vectors

PATH = Path(__file__).resolve().parents[1] / "vectors" / "checkout_return.json"
DOCUMENT = json.loads(PATH.read_text("utf-8"))
VECTORS: list[dict[str, Any]] = DOCUMENT["vectors"]
KEY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(DOCUMENT["ed25519_seed_hex"]))
PUBLIC = {key_id: bytes.fromhex(hex_) for key_id, hex_ in DOCUMENT["public_keys"].items()}


def test_the_file_is_what_the_generator_writes() -> None:
    assert DOCUMENT["format"] == "paycode-checkout-return-vectors/1"
    assert gen_checkout_vectors.build() == DOCUMENT


@pytest.mark.parametrize("vector", VECTORS, ids=[v["label"] for v in VECTORS])
def test_each_return_is_reproduced_and_each_variant_reads_as_stated(
    vector: dict[str, Any],
) -> None:
    fields = vector["fields"]
    assert signed_message(fields).hex() == vector["signed_message_hex"]
    pairs = build_return(fields, lambda message: (fields["key"], KEY.sign(message)))
    assert pairs[-1] == ("paycode_sig", b64url(bytes.fromhex(vector["signature_hex"])))
    query = "cart=7&" + urllib.parse.urlencode(pairs, quote_via=urllib.parse.quote)
    assert query == vector["query"]
    verdicts = {
        variant["name"]: str(
            verify_return(
                urllib.parse.parse_qsl(variant["query"], keep_blank_values=True), PUBLIC
            ).verdict
        )
        for variant in vector["variants"]
    }
    assert verdicts == {variant["name"]: variant["verdict"] for variant in vector["variants"]}
    assert verdicts["as issued"] == "valid" and verdicts["amount changed"] == "altered"
