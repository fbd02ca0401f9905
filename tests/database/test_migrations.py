"""Released migrations are frozen: each one that installs PostgreSQL functions ships the SQL it
installed in a file of its own (paycode.server.database.functions), so upgrading through an old
revision installs what that revision installed when it was released, not today's functions.

A change to the functions is a new migration with a new file, whose digest is added below when
it is released; editing a listed file fails here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from paycode.server.database import functions, migrate
from paycode.server.database.engine import make_engine
from paycode.server.database.models import Base
from tests.support.servers import postgres_database

FROZEN_SQL_SHA256 = {
    "0002_charge_function.sql": "3d29b54fb4a641271ede502bc55de403e573bb4f815c8674cfa33d0d7b7067f0",
    "0005_charge_function.sql": "df01d9182f1cf137f5e765bbf8fb0ed254b39d8336feec884953bf6e3cd71a0a",
    "0006_charge_function.sql": "09025d320e6ef37b8e152448d213bc5013f903c0f4a993909bb3fde4e980e5aa",
    "0007_charge_function.sql": "85980cfaf747372219bfc8c2719f7362357f4e5ca2da5e377e86e7c1c5285121",
    "0010_charge_function.sql": "95dbdc1436e73be02eb4f06acafe56552ce17a3dc9136fbcd6ffe65f41222566",
    "0012_charge_function.sql": "de65f6891da7bee237e63a10b8dc95478da30b9816b88b8c44cb9c55261b810e",
}
"""SHA-256 of each released migration's SQL file, byte for byte."""
VERSIONS_DIR = migrate.MIGRATIONS_DIR / "versions"
INSTALL_CALL = re.compile(r'functions\.install\(op\.get_bind\(\), "([^"]+)"\)')
FUNCTION = re.compile(
    r"CREATE (?:OR REPLACE )?FUNCTION (\w+)\((.*?)LANGUAGE plpgsql AS \$fn\$(.*?)\$fn\$", re.S
)
"""name, the parameters (and RETURNS clause), the body, of each function a file creates."""


def sql_folder() -> Traversable:
    return resources.files("paycode.server.database.migrations").joinpath("sql")


def sql_files() -> set[str]:
    return {entry.name for entry in sql_folder().iterdir() if entry.name.endswith(".sql")}


def test_released_sql_files_are_unchanged() -> None:
    missing = sorted(set(FROZEN_SQL_SHA256) - sql_files())
    assert not missing, f"released migration SQL removed: {missing}"
    changed = [
        name
        for name, digest in FROZEN_SQL_SHA256.items()
        if hashlib.sha256(sql_folder().joinpath(name).read_bytes()).hexdigest() != digest
    ]
    assert not changed, f"released migration SQL edited: {changed}; write a new migration"


def test_every_sql_file_is_listed() -> None:
    """A new migration's file joins the list (its digest) when it is released."""
    unlisted = sorted(sql_files() - set(FROZEN_SQL_SHA256))
    assert not unlisted, f"add the SHA-256 of {unlisted} to FROZEN_SQL_SHA256"


def installed_by_revision() -> dict[str, str]:
    """revision -> the SQL file its upgrade() installs, read from the migration scripts."""
    script = ScriptDirectory.from_config(migrate.alembic_config(""))
    found: dict[str, str] = {}
    for revision in script.walk_revisions():
        assert revision.path is not None
        calls = INSTALL_CALL.findall(Path(revision.path).read_text(encoding="utf-8"))
        assert len(calls) <= 1, f"{revision.revision} installs several files: {calls}"
        if calls:
            found[revision.revision] = calls[0]
    return found


def test_each_migration_installs_its_own_file() -> None:
    installed = installed_by_revision()
    assert installed, "no migration installs functions: the pattern no longer matches"
    for revision, file_name in installed.items():
        assert file_name.startswith(f"{revision}_"), f"{revision} installs {file_name}"
    assert sorted(installed.values()) == sorted(FROZEN_SQL_SHA256)


def test_the_running_code_calls_the_newest_file() -> None:
    assert max(sql_files()) == functions.CHARGE_FUNCTIONS_SQL
    newest_revision = max(installed_by_revision())
    assert installed_by_revision()[newest_revision] == functions.CHARGE_FUNCTIONS_SQL


@dataclass(frozen=True, slots=True)
class Function:
    """A PL/pgSQL function: how many input arguments it takes, and its body."""

    arguments: int
    body: str


def functions_in(file_name: str) -> dict[str, Function]:
    """The functions a migration's SQL file creates, as pg_proc records them."""
    found = {}
    for name, header, body in FUNCTION.findall(functions.frozen_sql(file_name)):
        lines = [line.split("--", 1)[0] for line in header.splitlines()]
        parameters = "".join(lines).rsplit(")", 1)[0]  # drop `) RETURNS ...`
        inputs = [
            p for p in parameters.split(",") if p.strip() and not p.strip().startswith("OUT ")
        ]
        found[name] = Function(len(inputs), body)
    return found


def installed_functions(connection: Connection) -> dict[str, Function]:
    rows = connection.execute(
        text("SELECT proname, pronargs, prosrc FROM pg_proc WHERE proname LIKE 'paycode\\_%'")
    )
    return {name: Function(arguments, body) for name, arguments, body in rows}


def revisions_oldest_first() -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config(""))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


@pytest.mark.postgres
def test_each_revision_installs_the_functions_of_its_own_file() -> None:
    """Upgrading one revision at a time: after each, PostgreSQL holds exactly the functions of
    the newest file installed so far, argument counts and bodies alike."""
    installs = installed_by_revision()
    today = functions_in(functions.CHARGE_FUNCTIONS_SQL)
    with postgres_database() as url:
        config = migrate.alembic_config(url)
        engine = make_engine(url)
        expected: dict[str, Function] = {}
        try:
            for revision in revisions_oldest_first():
                command.upgrade(config, revision)
                if revision in installs:
                    expected = functions_in(installs[revision])
                with engine.connect() as connection:
                    assert installed_functions(connection) == expected, revision
                if revision == "0005":
                    # The point of freezing: 0005's claim step took 14 arguments, today's 17.
                    claimed = expected["paycode_charge_claimed"]
                    assert (claimed.arguments, today["paycode_charge_claimed"].arguments) == (
                        14,
                        17,
                    )
                    assert claimed.body != today["paycode_charge_claimed"].body
        finally:
            engine.dispose()
    assert expected == today, "the newest revision installs what the running code calls"


def test_the_migrations_build_exactly_the_schema_the_models_declare(migrated: Engine) -> None:
    """Every table, column, type, index and constraint of Base.metadata (offline, online
    codes, checkout, points included), on each backend: nothing filtered out."""
    with migrated.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
