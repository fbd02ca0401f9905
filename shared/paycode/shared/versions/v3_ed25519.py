"""Version 3: Ed25519-signed code in an EMVCo Consumer-Presented Mode container (spec §6).

    85 05 "CPV01"                                   payload format indicator
    61 81 93                                        application template
       4F 09 F0 "PAYCODE" 03                        proprietary AID (ISO 7816-5 'F' RID), v3
       63 81 85                                     application specific transparent template
          DF01 3F  eph_pub[32] | AEAD(plaintext)[31] the sealed envelope
          DF02 40  Ed25519 signature[64] over "paycode-v3sig" | AID | envelope [| binding]

The envelope seals the 15-byte plaintext (handle, step, counter, flags) to the server's X25519
public key with a fresh ephemeral key per code: key = HKDF-SHA256(X25519(eph, server)),
ChaCha20-Poly1305 with a zero nonce (the key is never reused). No secret is shared by all
phones, and the server stores only device public keys: a database leak cannot forge codes.
A merchant-bound code (flags has MERCHANT_BOUND, spec §10) also signs the binding digest,
which it does not carry: the server supplies the charging point's bindings.
A code has one spelling: `parse` rebuilds this exact layout and compares (spec §6).
"""

from __future__ import annotations

import base64
import binascii
import functools
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from paycode.shared.emv.tlv import decode_tlv, encode_constructed, encode_tlv, find_tlv
from paycode.shared.errors import CodeMalformed
from paycode.shared.keycheck import ed25519_signed
from paycode.shared.versions import plaintext
from paycode.shared.versions.base import (
    BOUND_FLAG,
    KNOWN_FLAGS,
    DeviceCredential,
    DeviceRecord,
    Reason,
    Rejected,
    Rng,
    Verification,
    VerifyContext,
    check_binding_arguments,
    judge_window,
    pick_single,
    reads_as_bound,
)

VERSION = "v3"
AID = bytes.fromhex("F0") + b"PAYCODE" + bytes([3])
COUNTER_MAX = plaintext.COUNTER_MAX
KEY_BYTES = 32
SIGNATURE_BYTES = 64
ENVELOPE_BYTES = KEY_BYTES + plaintext.SIZE + 16
PAYLOAD_BYTES = 157
LENGTH = 4 * ((PAYLOAD_BYTES + 2) // 3)

TAG_FORMAT, TAG_APP, TAG_AID, TAG_APP_DATA = 0x85, 0x61, 0x4F, 0x63
TAG_ENVELOPE, TAG_SIGNATURE = 0xDF01, 0xDF02
_FORMAT_INDICATOR = b"CPV01"
_SIG_DOMAIN = b"paycode-v3sig"
_SEAL_INFO = b"paycode-v3seal"
_AEAD_AAD = b"paycode-v3"
_NONCE = bytes(12)


def _container(envelope: bytes, signature: bytes) -> bytes:
    app_data = encode_tlv(TAG_ENVELOPE, envelope) + encode_tlv(TAG_SIGNATURE, signature)
    application = encode_tlv(TAG_AID, AID) + encode_constructed(TAG_APP_DATA, app_data)
    return encode_tlv(TAG_FORMAT, _FORMAT_INDICATOR) + encode_constructed(TAG_APP, application)


PREFIX = base64.b64encode(_container(bytes(ENVELOPE_BYTES), bytes(SIGNATURE_BYTES))[:21]).decode()
"""The constant first 28 characters: format indicator, template header and AID."""


def _envelope_key(shared_secret: bytes, eph_public: bytes, server_public: bytes) -> bytes:
    hkdf = HKDF(hashes.SHA256(), KEY_BYTES, salt=eph_public + server_public, info=_SEAL_INFO)
    return hkdf.derive(shared_secret)


def seal(plain: bytes, server_public: bytes, eph_private: bytes) -> bytes:
    """eph_pub | ChaCha20-Poly1305(plain): only the holder of the server key can open it."""
    eph = X25519PrivateKey.from_private_bytes(eph_private)
    eph_public = eph.public_key().public_bytes_raw()
    shared_secret = eph.exchange(X25519PublicKey.from_public_bytes(server_public))
    key = _envelope_key(shared_secret, eph_public, server_public)
    return eph_public + ChaCha20Poly1305(key).encrypt(_NONCE, plain, _AEAD_AAD)


@functools.lru_cache(maxsize=8)
def _server_key(private_raw: bytes) -> tuple[X25519PrivateKey, bytes]:
    """Load a seal key once: deriving its public half costs as much as the exchange itself."""
    private = X25519PrivateKey.from_private_bytes(private_raw)
    return private, private.public_key().public_bytes_raw()


def unseal(envelope: bytes, server_private_raw: bytes) -> bytes | None:
    """The plaintext, or None when the envelope was not sealed to this key (or was altered)."""
    server_private, server_public = _server_key(server_private_raw)
    eph_public = envelope[:KEY_BYTES]
    try:
        shared_secret = server_private.exchange(X25519PublicKey.from_public_bytes(eph_public))
    except ValueError:  # a low-order point gives an all-zero secret: not a genuine envelope
        return None
    key = _envelope_key(shared_secret, eph_public, server_public)
    try:
        return ChaCha20Poly1305(key).decrypt(_NONCE, envelope[KEY_BYTES:], _AEAD_AAD)
    except InvalidTag:
        return None


class QrEd25519V3:
    version = VERSION
    prefix = PREFIX
    handle_bytes = plaintext.HANDLE_BYTES
    symbology = "qr"
    counter_max = COUNTER_MAX
    bindable = True

    def matches(self, text: str) -> bool:
        return text.startswith(PREFIX)

    def new_handle(self, rng: Rng = os.urandom) -> bytes:
        return rng(plaintext.HANDLE_BYTES)

    def generate(
        self,
        credential: DeviceCredential,
        *,
        step: int,
        counter: int,
        flags: int = 0,
        rng: Rng = os.urandom,
        binding: bytes = b"",
    ) -> str:
        check_binding_arguments(flags, binding)
        plain = plaintext.pack(plaintext.CodeFields(credential.handle, step, counter, flags))
        envelope = seal(plain, credential.seal_public_key, rng(KEY_BYTES))
        signing_key = Ed25519PrivateKey.from_private_bytes(credential.secret)
        signature = signing_key.sign(_SIG_DOMAIN + AID + envelope + binding)
        payload = _container(envelope, signature)
        assert len(payload) == PAYLOAD_BYTES
        return base64.b64encode(payload).decode()

    def parse(self, text: str) -> tuple[bytes, bytes]:
        """(envelope, signature) of a well-formed v3 code; raises CodeMalformed otherwise."""
        if len(text) != LENGTH or not text.startswith(PREFIX):
            raise CodeMalformed(f"a v3 code is {LENGTH} base64 characters starting {PREFIX}")
        try:
            payload = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as error:
            raise CodeMalformed("a v3 code is not valid base64") from error
        if base64.b64encode(payload) != text.encode():
            # The last group's unused low bits: 15 other spellings of one code would verify.
            raise CodeMalformed("a v3 code is not canonical base64")
        items = decode_tlv(payload)
        application = find_tlv(items, TAG_APP)
        app_data = find_tlv(application.children or (), TAG_APP_DATA) if application else None
        fields = app_data.children or () if app_data else ()
        envelope, signature = find_tlv(fields, TAG_ENVELOPE), find_tlv(fields, TAG_SIGNATURE)
        if envelope is None or signature is None:
            raise CodeMalformed("a v3 code needs an envelope (DF01) and a signature (DF02)")
        if len(envelope.value) != ENVELOPE_BYTES or len(signature.value) != SIGNATURE_BYTES:
            raise CodeMalformed("a v3 code's envelope or signature has the wrong length")
        if _container(envelope.value, signature.value) != payload:
            # The signature covers the envelope, not the frame: swapped, repeated or extra
            # fields would give one code other spellings that still verify.
            raise CodeMalformed("a v3 code has one spelling: DF01 then DF02, nothing else")
        return envelope.value, signature.value

    def verify(self, text: str, ctx: VerifyContext) -> Verification:
        envelope, signature = self.parse(text)
        matches: list[Verification] = []
        bound_elsewhere = False
        suspect: DeviceRecord | None = None
        for seal_key in ctx.keys.seal_keys:
            plain = unseal(envelope, seal_key)
            if plain is None:
                continue
            fields = plaintext.unpack(plain)
            device = ctx.lookup(VERSION, fields.handle)
            if device is None:
                continue
            message = _SIG_DOMAIN + AID + envelope
            if fields.flags & BOUND_FLAG:
                # The flag is read before the signature checks; the signature covers it (it is
                # inside the envelope), so a flipped flag only changes which message fails.
                signed = (ed25519_signed(device.key, signature, message + b) for b in ctx.bindings)
                if not any(signed):
                    bound_elsewhere |= reads_as_bound(fields.flags)
                    continue
            elif not ed25519_signed(device.key, signature, message):
                suspect = suspect or device
                continue
            if fields.flags & ~KNOWN_FLAGS:
                detail = "code carries flags this server does not know"
                matches.append(Rejected(VERSION, Reason.CODE_INVALID, detail, device))
                continue
            matches.append(
                judge_window(
                    ctx,
                    VERSION,
                    device,
                    step=fields.step,
                    counter=fields.counter,
                    flags=fields.flags,
                )
            )
        return pick_single(VERSION, matches, bound_elsewhere=bound_elsewhere, suspect=suspect)


CODEC = QrEd25519V3()
