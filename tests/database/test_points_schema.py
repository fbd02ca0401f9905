"""The points tables (docs/spec.md §16): migration 0014 builds what the models declare, and the
database itself refuses a mandate over its day cap or with inverted caps, on SQLite and
PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.database import migrate
from paycode.server.database.engine import make_engine
from paycode.server.database.models import Base, Merchant, User
from paycode.server.database.points_models import PointsMandate
from tests.support.servers import postgres_database

POINTS_NAMES = ("points_mandates", "points_refunds", "mandate_id", "points")


@pytest.fixture(params=["sqlite", "postgres"])
def migrated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('schema') / 'paycode.db'}"
        migrate.upgrade(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()
        return
    with postgres_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()


def test_migrations_build_the_points_tables_the_models_declare(migrated: Engine) -> None:
    with migrated.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diffs = compare_metadata(context, Base.metadata)
    assert [diff for diff in diffs if any(name in repr(diff) for name in POINTS_NAMES)] == []


def _mandate(**fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": "mdt_1",
        "user_id": "usr_1",
        "merchant_id": "mch_1",
        "device_id": "dev_1",
        "asset": "PTS",
        "currency": "CNY",
        "rate_points": 100,
        "rate_minor": 100,
        "cap_per_payment_points": 500,
        "cap_per_day_points": 800,
        "reference": "",
        "expires_at_s": 2.0e9,
        "created_at_s": 1.0,
        "consent": "paycode-mandate/1\n{}",
        "signature": "c2ln",
    }
    return row | fields


def _refused(engine: Engine, statement: object) -> bool:
    with Session(engine) as session:
        try:
            session.execute(statement)  # type: ignore[call-overload]
            session.commit()
        except IntegrityError:
            return True
    return False


def test_the_database_refuses_what_the_caps_forbid(migrated: Engine) -> None:
    with Session(migrated) as session:
        session.add(User(id="usr_1", name="u", password_hash="x", created_at_s=1.0))
        session.add(Merchant(id="mch_1", name="m", currency="CNY", created_at_s=1.0))
        session.commit()
    inverted = _mandate(id="mdt_2", cap_per_payment_points=900)
    assert _refused(migrated, insert(PointsMandate).values(**inverted))
    assert not _refused(migrated, insert(PointsMandate).values(**_mandate()))
    over_day = update(PointsMandate).where(PointsMandate.id == "mdt_1").values(day_used_points=801)
    assert _refused(migrated, over_day)
