"""v3 has one spelling (issue 19, item 16): its two inner fields, the envelope (DF01) and the
signature (DF02), in that order, once each, nothing else. A genuine code re-framed with the
fields swapped keeps its length and its valid signature (the signature covers the envelope,
not the frame), so only the parser can refuse it; if it did not, one code would have two
spellings that both verify (the claim key still makes it single-use, but a till, a log or a
merchant de-duplicating on the text would see two codes)."""

from __future__ import annotations

import base64

import pytest

from paycode.shared.emv.tlv import encode_constructed, encode_tlv
from paycode.shared.errors import CodeMalformed
from paycode.shared.timestep import STEP_SECONDS
from paycode.shared.versions import v3_ed25519 as v3
from paycode.shared.versions.base import Accepted
from tests.support.protocol import CodeServer

NOW_S = 1_763_888_400.0


def _framed(envelope_first: bool, envelope: bytes, signature: bytes) -> str:
    fields = [encode_tlv(v3.TAG_ENVELOPE, envelope), encode_tlv(v3.TAG_SIGNATURE, signature)]
    app_data = b"".join(fields if envelope_first else fields[::-1])
    application = encode_tlv(v3.TAG_AID, v3.AID) + encode_constructed(v3.TAG_APP_DATA, app_data)
    payload = encode_tlv(v3.TAG_FORMAT, b"CPV01") + encode_constructed(v3.TAG_APP, application)
    return base64.b64encode(payload).decode()


def test_a_reordered_otherwise_genuine_v3_code_is_refused_as_malformed() -> None:
    world = CodeServer.new(NOW_S)
    credential = world.enroll("v3")
    code = v3.CODEC.generate(credential, step=int(NOW_S // STEP_SECONDS), counter=0)
    envelope, signature = v3.CODEC.parse(code)
    assert _framed(True, envelope, signature) == code  # the frame is rebuilt faithfully
    reordered = _framed(False, envelope, signature)
    assert len(reordered) == len(code) and reordered.startswith(v3.PREFIX)
    with pytest.raises(CodeMalformed, match="one spelling"):
        v3.CODEC.parse(reordered)
    with pytest.raises(CodeMalformed):
        world.verify(reordered)
    assert isinstance(world.verify(code), Accepted)
