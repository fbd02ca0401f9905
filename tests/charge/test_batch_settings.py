"""PAYCODE_CHARGE_BATCH (paycode.server.charge.batch_settings) and where a writer is made."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from paycode.server.charge.batch_settings import BatchSettings
from paycode.server.charge.batch_writer import conninfo_of, writer_slot
from paycode.shared.errors import ConfigError

PG_URL = "postgresql+psycopg://paycode:s3cret@db.example:5433/bank"


def test_the_setting_is_the_batch_maximum_and_one_turns_batching_off() -> None:
    assert BatchSettings.parse({}).batch_max == 64
    assert BatchSettings.parse({"PAYCODE_CHARGE_BATCH": "16"}).batch_max == 16
    assert not BatchSettings.parse({"PAYCODE_CHARGE_BATCH": "1"}).enabled
    for bad in ("0", "257", "-3", "8.5", "many", "٣"):
        with pytest.raises(ConfigError, match="PAYCODE_CHARGE_BATCH"):
            BatchSettings.parse({"PAYCODE_CHARGE_BATCH": bad})


def test_a_writer_only_on_postgresql_with_batching_on() -> None:
    postgres = create_engine(PG_URL)
    assert writer_slot(postgres, BatchSettings()) is not None
    assert writer_slot(postgres, BatchSettings(batch_max=1)) is None
    assert writer_slot(create_engine("sqlite://"), BatchSettings()) is None
    assert conninfo_of(postgres) == "postgresql://paycode:s3cret@db.example:5433/bank"
