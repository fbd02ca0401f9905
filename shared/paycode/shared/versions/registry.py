"""The live code versions, routed by their leading characters.

Adding a version is adding a module and one line to `VERSIONS`; no other version changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from paycode.shared.errors import CodeMalformed
from paycode.shared.versions import v1_numeric, v2_qr, v3_ed25519
from paycode.shared.versions.base import CodeVersion, VersionStatus

VERSIONS: tuple[CodeVersion, ...] = (
    v1_numeric.CODEC,
    v2_qr.CODEC,
    v3_ed25519.CODEC,
)

DEFAULT_STATUS: dict[str, VersionStatus] = {
    codec.version: VersionStatus.ACTIVE for codec in VERSIONS
}
PREFERRED_VERSION = "v3"
"""What a wallet enrolls when the user does not choose: no secret shared by all phones."""

TEXT_CHARS_MAX = 512
"""No live version is longer; anything longer is refused before any work."""

_BY_NAME = {codec.version: codec for codec in VERSIONS}


def prefixes_disjoint(prefixes: Sequence[str]) -> bool:
    """Whether routing by these prefixes is unambiguous: none starts another."""
    for i, first in enumerate(prefixes):
        for second in prefixes[i + 1 :]:
            if first.startswith(second) or second.startswith(first):
                return False
    return True


def _check_prefixes() -> None:
    """Routing is unambiguous: no version's prefix starts another's."""
    assert prefixes_disjoint([codec.prefix for codec in VERSIONS])
    assert len(_BY_NAME) == len(VERSIONS)


_check_prefixes()


def route(text: str) -> CodeVersion:
    """The version a scanned string belongs to; raises CodeMalformed when it is none of ours."""
    if not isinstance(text, str):
        raise CodeMalformed("a payment code is text")
    if len(text) > TEXT_CHARS_MAX:
        raise CodeMalformed(f"a payment code is at most {TEXT_CHARS_MAX} characters")
    for codec in VERSIONS:
        if codec.matches(text):
            return codec
    raise CodeMalformed("not a payment code of any live version")


def by_name(version: str) -> CodeVersion:
    """The codec called `version` ("v1", "v2", "v3"); raises KeyError naming the choices."""
    codec = _BY_NAME.get(version)
    if codec is None:
        raise KeyError(f"unknown code version {version!r}; live: {', '.join(_BY_NAME)}")
    return codec
