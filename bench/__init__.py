"""The benchmarks of `make bench` (bench/suite.py): each figure a ratio measured in one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
VECTORS_PATH = REPO_ROOT / "tests" / "vectors" / "codes.json"
"""The published test vectors: a data file the tests load too (scripts/gen_vectors.py)."""


def load_vectors() -> list[dict[str, Any]]:
    document = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    assert document["format"] == "paycode-vectors/1"
    vectors: list[dict[str, Any]] = document["vectors"]
    return vectors
