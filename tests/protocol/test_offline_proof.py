"""The offline key's proof of possession (docs/offline.md §2.1): the message is pinned byte for
byte (the server and the web wallet build the same one), and a proof verifies only for its
own key, device, request and place in the list."""

from __future__ import annotations

import hashlib

import pytest

from paycode.shared.enrollment import new_ed25519_seed
from paycode.shared.offline_proof import (
    DOMAIN,
    check_offline_key_proof,
    make_offline_key_proof,
    offline_key_proof_message,
)

SEED = bytes(range(1, 33))
PUBLIC = bytes.fromhex("79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664")
MESSAGE_HEX = (
    "0019706179636f64652d6f66666c696e652d6b65792d70726f6f66"  # field(domain)
    "002079b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664"  # field(pk)
    "000b6465765f6578616d706c65"  # field("dev_example")
    "00066964656d2d31"  # field("idem-1")
    "000102"  # field(u8(2))
)
PROOF_HEX = (
    "a4160d3b2d76dff268c67678a09541d313786e4b26768cc0fc79935c0b1a7756"
    "25eb1d78f69f6f0a4e1ddd1dc4925473aa3b3bda64caa44e6aa8a62226981c04"
)


def test_the_message_and_proof_are_pinned() -> None:
    message = offline_key_proof_message(PUBLIC, "dev_example", "idem-1", 2)
    assert message.hex() == MESSAGE_HEX
    assert message.startswith(len(DOMAIN).to_bytes(2, "big") + DOMAIN)
    assert make_offline_key_proof(SEED, "dev_example", "idem-1", 2).hex() == PROOF_HEX
    assert hashlib.sha256(message).hexdigest() == (
        "cb238ac944e18b7ea14b898d08c04783fcb2874f3f43188dea0701564ebd7767"
    )


def test_a_proof_verifies_only_for_its_own_key_device_request_and_index() -> None:
    proof = bytes.fromhex(PROOF_HEX)
    assert check_offline_key_proof(PUBLIC, proof, "dev_example", "idem-1", 2)
    other_public = new_ed25519_seed()[1]
    assert not check_offline_key_proof(other_public, proof, "dev_example", "idem-1", 2)
    assert not check_offline_key_proof(PUBLIC, proof, "dev_other", "idem-1", 2)
    assert not check_offline_key_proof(PUBLIC, proof, "dev_example", "idem-2", 2)
    for index in (0, 1, 3):
        assert not check_offline_key_proof(PUBLIC, proof, "dev_example", "idem-1", index)
    flipped = bytes([proof[0] ^ 1]) + proof[1:]
    assert not check_offline_key_proof(PUBLIC, flipped, "dev_example", "idem-1", 2)


def test_wrong_lengths_are_no_proof_not_an_exception() -> None:
    proof = bytes.fromhex(PROOF_HEX)
    for junk in (b"", proof[:-1], proof + b"\x00"):
        assert not check_offline_key_proof(PUBLIC, junk, "dev_example", "idem-1", 2)
    assert not check_offline_key_proof(PUBLIC[:31], proof, "dev_example", "idem-1", 2)


def test_length_prefixes_keep_device_and_key_apart() -> None:
    # Without the prefixes "dev_a" + "bc" and "dev_ab" + "c" would sign one message.
    one = offline_key_proof_message(PUBLIC, "dev_a", "bc", 0)
    two = offline_key_proof_message(PUBLIC, "dev_ab", "c", 0)
    assert one != two


def test_every_index_of_a_request_proves_for_itself() -> None:
    seeds = [new_ed25519_seed() for _ in range(4)]
    for index, (seed, public) in enumerate(seeds):
        proof = make_offline_key_proof(seed, "dev_x", "idem-x", index)
        checks = [check_offline_key_proof(public, proof, "dev_x", "idem-x", i) for i in range(4)]
        assert checks == [i == index for i in range(4)]


@pytest.mark.parametrize("index", [-1, 256])
def test_an_index_beyond_a_byte_is_refused(index: int) -> None:
    with pytest.raises(ValueError, match="index"):
        offline_key_proof_message(PUBLIC, "dev_example", "idem-1", index)
