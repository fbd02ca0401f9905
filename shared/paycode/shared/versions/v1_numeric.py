"""Version 1: 24-digit numeric code for Code 128, QR and manual keying (docs/spec.md §4).

    87 TTTTTTTT MMMMMMMMMMMMM C
    |  |        |             +- Damm check digit over the 23 digits before it
    |  |        +- 13 digits: (handle * 1000 + step % 100 * 10 + counter + pad) mod 10^13
    |  +- 8 digits: tag = HMAC-SHA256(device key, handle | step | counter) mod 10^8
    +- version prefix

pad = AES-256(hiding key, "pcv1pad:" | tag) mod 10^13. The tag comes first and the pad is
derived from it (an SIV construction), so two codes of one device share nothing a merchant can
see, while the server, holding the hiding key, unmasks the handle and finds the device in O(1).
"""

from __future__ import annotations

import hmac
import os
import struct

from paycode.shared.checkdigit import damm_digit, damm_valid
from paycode.shared.errors import CodeMalformed
from paycode.shared.prf import aes_block, mac
from paycode.shared.timestep import step_at
from paycode.shared.versions.base import (
    DeviceCredential,
    DeviceRecord,
    Rng,
    Verification,
    VerifyContext,
    judge_window,
    pick_single,
)

VERSION = "v1"
PREFIX = "87"
LENGTH = 24
TAG_DIGITS = 8
MASKED_DIGITS = 13
HANDLE_DIGITS = 10
HANDLE_BYTES = 5
STEP_MODULUS = 100
COUNTER_MAX = 9

_TAG_MODULUS: int = 10**TAG_DIGITS
_MASKED_MODULUS: int = 10**MASKED_DIGITS
_HANDLE_MODULUS: int = 10**HANDLE_DIGITS
_TAG_DOMAIN = b"paycode-v1tag"
_TAG_FIELDS = struct.Struct(">13sQIB")
_PAD_DOMAIN = b"pcv1pad:"  # 8 bytes + 8 tag digits = one AES block
_MASKED_START = len(PREFIX) + TAG_DIGITS


def _tag(device_key: bytes, handle: int, step: int, counter: int) -> str:
    """The 8 tag digits. MAC input: domain | handle (u64) | step (u32) | counter (u8)."""
    message = _TAG_FIELDS.pack(_TAG_DOMAIN, handle, step, counter)
    return f"{int.from_bytes(mac(device_key, message)[:8], 'big') % _TAG_MODULUS:08d}"


def _pad(hiding_key: bytes, tag: str) -> int:
    """AES of "pcv1pad:" | the 8 ASCII tag digits, as an integer mod 10^13."""
    block = aes_block(hiding_key, _PAD_DOMAIN + tag.encode())
    return int.from_bytes(block, "big") % _MASKED_MODULUS


def _resolve_step(step_mod: int, expected_step: int) -> int:
    """The full step congruent to `step_mod` nearest the step the server expects (+-50 steps)."""
    delta = (step_mod - expected_step) % STEP_MODULUS
    if delta >= STEP_MODULUS // 2:
        delta -= STEP_MODULUS
    return expected_step + delta


class NumericV1:
    """The numeric version. Stateless; one module-level instance serves everyone."""

    version = VERSION
    prefix = PREFIX
    handle_bytes = HANDLE_BYTES
    symbology = "numeric"
    counter_max = COUNTER_MAX
    bindable = False
    """24 digits leave no room for flags, so a verifier could not tell a bound code (spec §10)."""

    def matches(self, text: str) -> bool:
        return text.startswith(PREFIX) and text.isascii() and text.isdigit()

    def new_handle(self, rng: Rng = os.urandom) -> bytes:
        """A uniform handle below 10^10 (rejection sampling, bounded)."""
        limit = 2**64 - 2**64 % _HANDLE_MODULUS
        for _ in range(64):
            value = int.from_bytes(rng(8), "big")
            if value < limit:
                return (value % _HANDLE_MODULUS).to_bytes(HANDLE_BYTES, "big")
        raise RuntimeError("random source failed to produce a handle in 64 draws")

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
        if flags != 0 or binding:
            raise ValueError("v1 codes carry no flags, so they cannot be merchant-bound")
        if not 0 <= counter <= COUNTER_MAX:
            raise ValueError(f"v1 counter must be 0..{COUNTER_MAX}")
        handle = int.from_bytes(credential.handle, "big")
        assert handle < _HANDLE_MODULUS and 0 <= step < 2**32
        tag = _tag(credential.secret, handle, step, counter)
        plain = handle * 1000 + (step % STEP_MODULUS) * 10 + counter
        masked = (plain + _pad(credential.hiding_key, tag)) % _MASKED_MODULUS
        body = f"{PREFIX}{tag}{masked:0{MASKED_DIGITS}d}"
        code = body + damm_digit(body)
        assert len(code) == LENGTH
        return code

    def parse(self, text: str) -> tuple[str, int]:
        """(tag digits, masked) of a well-formed v1 code; raises CodeMalformed otherwise."""
        if len(text) != LENGTH or not self.matches(text):
            raise CodeMalformed(f"a v1 code is {LENGTH} digits starting {PREFIX}")
        if not damm_valid(text):
            raise CodeMalformed("check digit does not match: the code was misread or mistyped")
        return text[len(PREFIX) : _MASKED_START], int(text[_MASKED_START : LENGTH - 1])

    def verify(self, text: str, ctx: VerifyContext) -> Verification:
        tag, masked = self.parse(text)
        matches: list[Verification] = []
        suspect: DeviceRecord | None = None
        for hiding_key in ctx.keys.hiding_keys.get(VERSION, ()):
            plain = (masked - _pad(hiding_key, tag)) % _MASKED_MODULUS
            handle, rest = divmod(plain, 1000)
            device = ctx.lookup(VERSION, handle.to_bytes(HANDLE_BYTES, "big"))
            if device is None:
                continue
            expected_step = step_at(ctx.now_s) + device.drift_steps
            step = _resolve_step(rest // 10, expected_step)
            counter = rest % 10
            if not 0 <= step < 2**32 or not hmac.compare_digest(
                _tag(device.key, handle, step, counter), tag
            ):
                suspect = suspect or device
                continue
            matches.append(judge_window(ctx, VERSION, device, step=step, counter=counter, flags=0))
        return pick_single(VERSION, matches, suspect=suspect)


CODEC = NumericV1()
