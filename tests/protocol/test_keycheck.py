"""Weak public keys the wallet is handed (issue 19, item 6): the server's X25519 seal key in a
grant and the server's Ed25519 QR-signing keys. One check (shared/keycheck.py) serves the
server's enrollment and both of these."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from paycode.client.merchant_qr import parse_qr_keys
from paycode.shared.code_keys import read_code_keys
from paycode.shared.emv.qr_signature import b64url
from paycode.shared.enrollment import b64, build_grant, new_ed25519_seed, read_grant
from paycode.shared.errors import EnrollmentInvalid, WalletError, WeakKey
from paycode.shared.keycheck import check_ed25519_public, check_x25519_public
from tests.support.weak_keys import P, small_order_keys

LOW_ORDER_X25519 = (
    0,
    1,
    0x00B8495F16056286FDB1329CEB8D09DA6AC49FF1FAE35616AEB8413B7C7AEBE0,
    0x57119FD0DD4E22D8868E1C58C45C44045BEF839C55B1D0B1248C50A3BC959C5F,
    P - 1,
    P,
    P + 1,
)
"""RFC 7748's low-order u-coordinates (and their non-canonical spellings u + p)."""


def _grant(seal_public: bytes) -> dict[str, object]:
    good = X25519PrivateKey.generate().public_key().public_bytes_raw()
    grant = build_grant(
        version="v3", device_id="dev_1", handle=bytes(8), server_time_s=1.0e9, seal_public_key=good
    )
    return grant | {"seal_public_key": b64(seal_public)}


@pytest.mark.parametrize("u", LOW_ORDER_X25519)
def test_a_grant_with_a_low_order_seal_key_is_refused(u: int) -> None:
    raw = u.to_bytes(32, "little")
    with pytest.raises(WeakKey):
        check_x25519_public(raw)
    with pytest.raises(EnrollmentInvalid, match="seal key"):
        read_grant(_grant(raw), ed25519_seed=new_ed25519_seed()[0])


def test_a_grant_with_a_genuine_seal_key_is_read() -> None:
    good = X25519PrivateKey.generate().public_key().public_bytes_raw()
    credential, _ = read_grant(_grant(good), ed25519_seed=new_ed25519_seed()[0])
    assert credential.seal_public_key == good


def test_a_small_order_qr_signing_key_from_the_server_is_refused() -> None:
    for raw in small_order_keys():
        with pytest.raises(WeakKey):
            check_ed25519_public(raw)
        listed = [{"key_id": "qr1", "public_key": b64url(raw)}]
        with pytest.raises(WalletError) as caught:
            parse_qr_keys(listed)
        assert caught.value.code == "weak_key"
    good = b64url(new_ed25519_seed()[1])
    assert parse_qr_keys([{"key_id": "qr1", "public_key": good}]) == {"qr1": good}


def test_why_the_identity_key_is_refused_one_signature_verifies_every_message() -> None:
    """The attack item 6 closes, shown on the verifier the server uses (OpenSSL)."""
    identity = bytes([1]) + bytes(31)
    anything = identity + bytes(32)  # R = identity, S = 0
    verifier = Ed25519PublicKey.from_public_bytes(identity)
    for message in (b"paycode-v3sig", b"any code", b"any request"):
        verifier.verify(anything, message)  # raises InvalidSignature if it did not verify
    with pytest.raises(WeakKey, match="small order"):
        check_ed25519_public(identity)


@pytest.mark.parametrize("u", LOW_ORDER_X25519)
def test_a_rotated_seal_key_of_low_order_is_ignored_not_learned(u: int) -> None:
    # A signed answer's `code_keys` is the other way a seal key reaches a wallet (spec §7).
    good = X25519PrivateKey.generate().public_key().public_bytes_raw()
    entries = [
        {"version": "v3", "key_id": "seal-weak", "seal_public_key": b64(u.to_bytes(32, "little"))}
    ]
    assert read_code_keys(entries) == {}
    entries[0]["seal_public_key"] = b64(good)
    assert read_code_keys(entries)["v3"].key == good
