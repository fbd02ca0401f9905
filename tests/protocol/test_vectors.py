"""The published vectors (tests/vectors/codes.json) are produced and accepted, bit for bit."""

from __future__ import annotations

from typing import Any

import pytest

from paycode.shared.binding import MerchantBinding
from paycode.shared.timestep import step_at
from paycode.shared.verify import verify_code
from paycode.shared.versions.base import Accepted, Flags, Reason, Rejected
from paycode.shared.versions.registry import by_name, route
from tests.support.protocol import (
    Registry,
    load_vectors,
    vector_binding,
    vector_bindings,
    vector_setup,
)

VECTORS = load_vectors()
IDS = [f"{v['version']}-{v['unix_time']}-{v['counter']}" for v in VECTORS]
BOUND = [v for v in VECTORS if "binding" in v]
BOUND_IDS = [f"{v['version']}-{v['unix_time']}-{v['counter']}" for v in BOUND]
ELSEWHERE = MerchantBinding("mer_other_shop").digest


def test_every_version_has_vectors() -> None:
    assert {v["version"] for v in VECTORS} == {"v1", "v2", "v3"}
    assert len(VECTORS) >= 9
    bound_terminals = {(v["version"], v["binding"]["terminal_id"] is None) for v in BOUND}
    assert bound_terminals == {("v2", True), ("v2", False), ("v3", True), ("v3", False)}


def test_bound_flag_is_set_exactly_on_bound_vectors() -> None:
    for vector in VECTORS:
        assert bool(vector["flags"] & Flags.MERCHANT_BOUND) == ("binding" in vector)


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_generate_reproduces_vector(vector: dict[str, Any]) -> None:
    credential, _, _ = vector_setup(vector)
    codec = by_name(vector["version"])
    ephemeral = bytes.fromhex(vector.get("ephemeral_private", ""))
    code = codec.generate(
        credential,
        step=vector["step"],
        counter=vector["counter"],
        flags=vector["flags"],
        rng=lambda n: ephemeral[:n],
        binding=vector_binding(vector),
    )
    assert code == vector["code"]
    assert step_at(vector["unix_time"]) == vector["step"]
    assert route(code) is codec


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_vector_verifies_at_its_time(vector: dict[str, Any]) -> None:
    _, record, keys = vector_setup(vector)
    registry = Registry()
    registry.add(record, vector["version"])
    context = registry.context(keys, vector["unix_time"], bindings=vector_bindings(vector))
    result = verify_code(vector["code"], context)
    assert isinstance(result, Accepted), result
    assert (result.version, result.step, result.counter, result.flags) == (
        vector["version"],
        vector["step"],
        vector["counter"],
        vector["flags"],
    )
    assert result.device == record
    assert registry.lookups == 1  # O(1): one index lookup, no scan


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_vector_expires(vector: dict[str, Any]) -> None:
    _, record, keys = vector_setup(vector)
    registry = Registry()
    registry.add(record, vector["version"])
    context = registry.context(keys, vector["unix_time"] + 120, bindings=vector_bindings(vector))
    result = verify_code(vector["code"], context)
    assert isinstance(result, Rejected)
    assert result.reason is Reason.CODE_EXPIRED


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_vector_is_unknown_without_its_device(vector: dict[str, Any]) -> None:
    _, _, keys = vector_setup(vector)
    result = verify_code(vector["code"], Registry().context(keys, vector["unix_time"]))
    assert isinstance(result, Rejected)
    assert result.reason is Reason.CODE_INVALID


@pytest.mark.parametrize("vector", BOUND, ids=BOUND_IDS)
def test_bound_vector_digest(vector: dict[str, Any]) -> None:
    binding = MerchantBinding(vector["binding"]["merchant_id"], vector["binding"]["terminal_id"])
    assert binding.digest == vector_binding(vector)


@pytest.mark.parametrize("vector", BOUND, ids=BOUND_IDS)
@pytest.mark.parametrize("bindings", [(ELSEWHERE,), ()], ids=["other-merchant", "no-binding"])
def test_bound_vector_is_refused_elsewhere(vector: dict[str, Any], bindings: tuple[bytes]) -> None:
    _, record, keys = vector_setup(vector)
    registry = Registry()
    registry.add(record, vector["version"])
    context = registry.context(keys, vector["unix_time"], bindings=bindings)
    result = verify_code(vector["code"], context)
    assert isinstance(result, Rejected)
    assert result.reason is Reason.MERCHANT_MISMATCH
    assert result.device is None  # not proved genuine: the server claims nothing
