"""docs/openapi.json: valid OpenAPI 3.1, the same routes as the app, served unchanged."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from paycode.server.app import create_app
from paycode.shared.codes import HTTP_STATUS
from tests.support.configs import sqlite_test_config

ROOT = Path(__file__).resolve().parents[2]
OPENAPI_PATH = ROOT / "docs" / "openapi.json"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
"""Flask adds these to every rule; the document describes only the methods a view declares."""
UNKEYED_POSTS = {"/v1/wallet/sessions"}
"""Log-in moves nothing and creates nothing a retry could duplicate: no Idempotency-Key."""


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    tmp = tmp_path_factory.mktemp("openapi")
    config = sqlite_test_config(tmp)
    yield create_app(config)


def app_routes(app: Flask) -> dict[str, set[str]]:
    """OpenAPI path -> methods (lower case) of every rule the app registers, '<x>' -> '{x}'."""
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        methods = {m.lower() for m in (rule.methods or set()) - IMPLICIT_METHODS}
        routes.setdefault(path, set()).update(methods)
    return routes


def documented_routes(document: dict[str, Any]) -> dict[str, set[str]]:
    return {
        path: {key for key in item if key in HTTP_METHODS}
        for path, item in document["paths"].items()
    }


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def in_dev_extras(package: str) -> bool:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    dev: list[str] = project.get("optional-dependencies", {}).get("dev", [])
    return any(re.match(rf"{re.escape(package)}\b", entry) for entry in dev)


def test_file_is_openapi_3_1(document: dict[str, Any]) -> None:
    assert re.fullmatch(r"3\.1\.\d+", document["openapi"])
    assert document["info"]["title"] and document["info"]["version"]
    assert document["paths"]


def test_document_validates(document: dict[str, Any]) -> None:
    if not in_dev_extras("openapi-spec-validator"):
        pytest.skip("openapi-spec-validator is not a dev dependency")
    from openapi_spec_validator import validate

    validate(document)


def test_every_v1_route_is_documented_with_its_methods(
    app: Flask, document: dict[str, Any]
) -> None:
    served = {path: methods for path, methods in app_routes(app).items() if path[:4] == "/v1/"}
    documented = documented_routes(document)
    for path, methods in served.items():
        assert path in documented, f"{path} is served but not in docs/openapi.json"
        assert documented[path] == methods, path


def test_every_documented_path_is_served(app: Flask, document: dict[str, Any]) -> None:
    served = app_routes(app)
    for path, methods in documented_routes(document).items():
        assert path in served, f"{path} is documented but the app has no such route"
        assert methods <= served[path], path


def test_served_document_equals_the_file(app: Flask, document: dict[str, Any]) -> None:
    response = app.test_client().get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == document


def test_the_package_ships_the_docs_file_itself() -> None:
    """server/openapi.json (package data, what an installed server serves) is a link to the
    document in docs/, never a copy that could fall behind it."""
    shipped = ROOT / "server" / "paycode" / "server" / "openapi.json"
    assert shipped.is_symlink()
    assert shipped.resolve() == OPENAPI_PATH.resolve()


def test_problem_schema_lists_every_stable_code(document: dict[str, Any]) -> None:
    enum = document["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
    assert set(HTTP_STATUS) <= set(enum)
    assert len(enum) == len(set(enum))


def test_documented_problem_codes_match_their_status(document: dict[str, Any]) -> None:
    """Each endpoint's problem response names only codes the server sends with that status."""
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            schema = response.get("content", {}).get("application/problem+json", {}).get("schema")
            if schema is None or status == "default":
                continue
            codes = [
                code
                for part in schema.get("allOf", [])
                for code in part.get("properties", {}).get("code", {}).get("enum", [])
            ]
            assert codes, f"{method.upper()} {path} {status} names no codes"
            for code in codes:
                assert HTTP_STATUS[code] == int(status), (path, method, code)


def test_state_changing_posts_take_an_idempotency_key(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        if method != "post" or path in UNKEYED_POSTS:
            continue
        refs = {parameter.get("$ref") for parameter in operation.get("parameters", [])}
        assert "#/components/parameters/IdempotencyKey" in refs, path
