"""tests/vectors/mandate_consent.json is what the Python reference makes (the web wallet's
webwallet/test/mandate_consent.test.js reproduces it byte for byte), and the server's
signature check accepts every signature in it."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from paycode.shared.points import Consent, consent_message
from paycode.shared.wallet_auth import signature_valid
from scripts import gen_mandate_vectors


def test_vector_file_is_what_the_reference_makes() -> None:
    assert gen_mandate_vectors.OUT.read_text(encoding="ascii") == gen_mandate_vectors.text()


def test_the_server_accepts_every_vector_signature() -> None:
    vectors = json.loads(gen_mandate_vectors.OUT.read_text(encoding="ascii"))
    device_key = bytes.fromhex(vectors["devices"]["v2"]["device_key"])
    seed = bytes.fromhex(vectors["devices"]["v3"]["ed25519_seed"])
    public_key = (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    for vector in vectors["vectors"]:
        message = consent_message(Consent(**vector["consent"]))
        assert message.decode("ascii") == vector["message"]
        assert signature_valid("v2", device_key, message, vector["signatures"]["v2"])
        assert signature_valid("v3", public_key, message, vector["signatures"]["v3"])
        assert not signature_valid("v3", public_key, message + b" ", vector["signatures"]["v3"])
