"""/v1/openapi.json: the API description kept in docs/openapi.json.

server/openapi.json is a symbolic link to it, so the document ships as package data: a wheel
holds the file itself, and an installed server never reads the source tree."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from flask import Blueprint, Response, jsonify

bp = Blueprint("meta", __name__, url_prefix="/v1")


@cache
def openapi_document() -> dict[str, Any]:
    text = resources.files("paycode.server").joinpath("openapi.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())
