"""The points tables (docs/spec.md §16): migration 0014 builds what the models declare, and the
database itself refuses a mandate over its day cap or with inverted caps, on SQLite and
PostgreSQL alike."""

from __future__ import annotations

from sqlalchemy import Engine, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.database.models import Merchant, User
from paycode.server.database.points_models import PointsMandate

POINTS_NAMES = ("points_mandates", "points_refunds", "mandate_id", "points")


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
