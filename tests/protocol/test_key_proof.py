"""The v3 key's proof of possession (docs/spec.md §6.1, issue 19 item 15): the message is the
one the web wallet signs (webwallet/test/keyproof.test.js pins the same values), and a proof
verifies only for its own version, key, session or device, and request."""

from __future__ import annotations

import hashlib

from paycode.shared.enrollment import new_ed25519_seed
from paycode.shared.key_proof import (
    device_scope,
    make_proof,
    proof_message,
    proof_valid,
    session_scope,
)

SEED = bytes(range(1, 33))
PUBLIC = bytes.fromhex("79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664")
SESSION_MESSAGE_SHA256 = "7295cae93fc5bc300aead34b9d2add5bf7575e5c80fe94f346afe4568b1d925b"
SESSION_PROOF = (
    "da0ik3PQAZgid8R/69EVoUEl80DxeqnockqpYM6O2L8x5eVHQvIT15z8gvSxYJqRkn3DkVcjAg2A4AlhERIdBg=="
)
ROTATION_MESSAGE_SHA256 = "e0c006c606de8d647b3b58772ae3c44027842d1be988f14cef868867125e1083"


def test_the_proof_message_is_the_one_the_web_wallet_signs() -> None:
    scope = session_scope("tok-example", "idem-1")
    assert scope.bound_to == "session:" + hashlib.sha256(b"tok-example").hexdigest()
    message = proof_message("v3", PUBLIC, scope)
    assert hashlib.sha256(message).hexdigest() == SESSION_MESSAGE_SHA256
    assert make_proof(SEED, "v3", scope) == SESSION_PROOF
    rotation = proof_message("v3", PUBLIC, device_scope("dev_example", "idem-2"))
    assert hashlib.sha256(rotation).hexdigest() == ROTATION_MESSAGE_SHA256


def test_a_proof_verifies_only_for_its_own_enrollment() -> None:
    scope = session_scope("tok-example", "idem-1")
    assert proof_valid(SESSION_PROOF, "v3", PUBLIC, scope)
    other_public = new_ed25519_seed()[1]
    assert not proof_valid(SESSION_PROOF, "v3", other_public, scope)
    assert not proof_valid(SESSION_PROOF, "v2", PUBLIC, scope)
    assert not proof_valid(SESSION_PROOF, "v3", PUBLIC, session_scope("tok-other", "idem-1"))
    assert not proof_valid(SESSION_PROOF, "v3", PUBLIC, session_scope("tok-example", "idem-9"))
    assert not proof_valid(SESSION_PROOF, "v3", PUBLIC, device_scope("dev_example", "idem-1"))
    for junk in (None, 7, "", "not base64!", "AA==", SESSION_PROOF * 2):
        assert not proof_valid(junk, "v3", PUBLIC, scope)


def test_length_prefixes_keep_two_scopes_from_one_message() -> None:
    """Without them, ("device:a", "bc") and ("device:ab", "c") would sign the same bytes."""
    first = proof_message("v3", PUBLIC, device_scope("a", "bc"))
    assert first != proof_message("v3", PUBLIC, device_scope("ab", "c"))
