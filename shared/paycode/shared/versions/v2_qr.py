"""Version 2: symmetric-key QR code with a full step, a 16-bit counter and flags (spec §5).

    "PC2" + base32(tag[10] | masked[15])          43 characters, QR alphanumeric mode

plaintext = handle[8] | step[4] | counter[2] | flags[1]
tag       = HMAC-SHA256(device key, "paycode-v2tag" | plaintext [| binding])[:10]
masked    = plaintext XOR AES-256(hiding key, "pcv2pd" | tag)[:15]

`binding` (shared.binding, 32 bytes) is in the MAC only when flags has MERCHANT_BOUND (spec
§10); it never travels: the server supplies the charging point's bindings.

Same SIV shape as v1 with room to spare: an 80-bit tag, 64-bit handles, the full step (no
drift resolution needed) and flags the risk controls read.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os

from paycode.shared.errors import CodeMalformed
from paycode.shared.prf import aes_block, mac
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

VERSION = "v2"
PREFIX = "PC2"
TAG_BYTES = 10
BODY_CHARS = 40
LENGTH = len(PREFIX) + BODY_CHARS
COUNTER_MAX = plaintext.COUNTER_MAX

_TAG_DOMAIN = b"paycode-v2tag"
_PAD_DOMAIN = b"pcv2pd"  # 6 bytes + 10-byte tag = one AES block
_BASE32_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def _tag(device_key: bytes, plain: bytes) -> bytes:
    return mac(device_key, _TAG_DOMAIN + plain)[:TAG_BYTES]


def _tag_matches(device_key: bytes, plain: bytes, tag: bytes, suffixes: tuple[bytes, ...]) -> bool:
    """Whether `tag` is the device's over `plain` plus one of the charging point's bindings."""
    return any(hmac.compare_digest(_tag(device_key, plain + suffix), tag) for suffix in suffixes)


def _xor_pad(hiding_key: bytes, tag: bytes, data: bytes) -> bytes:
    pad = aes_block(hiding_key, _PAD_DOMAIN + tag)
    return (int.from_bytes(data, "big") ^ int.from_bytes(pad[: plaintext.SIZE], "big")).to_bytes(
        plaintext.SIZE, "big"
    )


class QrSymmetricV2:
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
        tag = _tag(credential.secret, plain + binding)
        body = base64.b32encode(tag + _xor_pad(credential.hiding_key, tag, plain)).decode()
        assert len(body) == BODY_CHARS
        return PREFIX + body

    def parse(self, text: str) -> tuple[bytes, bytes]:
        """(tag, masked) of a well-formed v2 code; raises CodeMalformed otherwise."""
        if len(text) != LENGTH or not text.startswith(PREFIX):
            raise CodeMalformed(f"a v2 code is {LENGTH} characters starting {PREFIX}")
        body = text[len(PREFIX) :]
        if not _BASE32_ALPHABET.issuperset(body):
            raise CodeMalformed("a v2 code uses only A-Z and 2-7 after its prefix")
        try:
            raw = base64.b32decode(body)
        except binascii.Error as error:  # unreachable after the alphabet check; kept typed
            raise CodeMalformed("a v2 code's body is not base32") from error
        return raw[:TAG_BYTES], raw[TAG_BYTES:]

    def verify(self, text: str, ctx: VerifyContext) -> Verification:
        tag, masked = self.parse(text)
        matches: list[Verification] = []
        bound_elsewhere = False
        suspect: DeviceRecord | None = None
        for hiding_key in ctx.keys.hiding_keys.get(VERSION, ()):
            plain = _xor_pad(hiding_key, tag, masked)
            fields = plaintext.unpack(plain)
            device = ctx.lookup(VERSION, fields.handle)
            if device is None:
                continue
            if fields.flags & BOUND_FLAG:
                # The flag is read before the tag checks; the tag covers it (it is in `plain`),
                # so a flipped flag only changes which message fails.
                if not _tag_matches(device.key, plain, tag, ctx.bindings):
                    bound_elsewhere |= reads_as_bound(fields.flags)
                    continue
            elif not hmac.compare_digest(_tag(device.key, plain), tag):
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


CODEC = QrSymmetricV2()
