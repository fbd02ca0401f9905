"""/v1/openapi.json: the API description, served from the copy kept in docs/."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify

bp = Blueprint("meta", __name__, url_prefix="/v1")

OPENAPI_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


@cache
def openapi_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(OPENAPI_PATH.read_text())
    return document


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())
