"""`paycode-server serve`: threaded gunicorn workers that keep connections alive, and the
refusals of bad thread counts (paycode.server.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from paycode.server import cli
from paycode.server.operations import observability
from tests.support.configs import sqlite_test_config


@pytest.fixture
def gunicorn_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What serve would hand gunicorn, captured instead of run."""
    captured: list[dict[str, Any]] = []
    monkeypatch.setattr(cli, "_config", lambda: sqlite_test_config(tmp_path))
    monkeypatch.setattr(cli, "_run_gunicorn", captured.append)
    monkeypatch.setenv(observability.MULTIPROC_ENV, str(tmp_path / "unused"))
    monkeypatch.delenv(cli.THREADS_ENV, raising=False)
    return captured


def test_serve_runs_threaded_workers_that_keep_connections_alive(
    gunicorn_options: list[dict[str, Any]],
) -> None:
    assert cli.main(["serve", "--workers", "3"]) == 0
    (options,) = gunicorn_options
    assert options["worker_class"] == "gthread"
    assert options["workers"] == 3
    assert options["threads"] == cli.THREADS_DEFAULT == 4
    assert options["keepalive"] == cli.KEEPALIVE_S > 0


def test_threads_come_from_the_flag_before_the_environment(
    gunicorn_options: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cli.THREADS_ENV, "6")
    assert cli.main(["serve"]) == 0
    assert cli.main(["serve", "--threads", "2"]) == 0
    assert [options["threads"] for options in gunicorn_options] == [6, 2]


@pytest.mark.parametrize("threads", ["0", "65", "-1"])
def test_a_thread_count_out_of_range_is_refused_with_its_code(
    threads: str, gunicorn_options: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", "--threads", threads]) != 0
    err = capsys.readouterr().err
    assert "[invalid_argument]" in err and "--threads must be 1-64" in err
    assert "Traceback" not in err
    assert gunicorn_options == []


def test_a_garbled_thread_setting_is_refused_with_its_code(
    gunicorn_options: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(cli.THREADS_ENV, "eight")
    assert cli.main(["serve"]) != 0
    err = capsys.readouterr().err
    assert "[config_invalid]" in err and cli.THREADS_ENV in err
    assert gunicorn_options == []
