"""Sharp edges of the console scripts (issue 19, item 24): a reader that closes the pipe early,
durations and currencies typed wrong, a database URL the server cannot use, and OpenCV's own
warnings. Each answers with a typed error or ends quietly: never a traceback, never
`internal_error`. The pipe and OpenCV cases run real processes (that is what they are about)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from paycode.appkit.console import EXIT_BROKEN_PIPE
from paycode.merchant_pos import settings
from paycode.merchant_pos.synthetic_frames import write_video
from tests.support.servers import REPO_ROOT, Server, run_cli_in_process, run_in_process
from tests.support.shop import (
    POS_MODULE,
    WALLET_MODULE,
    Merchant,
    charge,
    code_of,
    new_merchant,
    new_phone,
    new_user,
    person_env,
    use_fast_keystore,
    wallet_env,
)

PIPE_TIMEOUT_S = 60


def _into_closed_pipe(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `python ARGS` with stdout a pipe whose reader has gone, as `... | head -1` is once
    head has its line: every write the command makes meets EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO_ROOT,
            text=True,
            timeout=PIPE_TIMEOUT_S,
            check=False,
        )
    finally:
        os.close(write_end)


def _till_home(home: Path, url: str, merchant: Merchant | None = None) -> dict[str, str]:
    key_id, secret = (merchant.key_id, merchant.secret) if merchant else ("term_x", b"k" * 32)
    settings.save(home, settings.validated(url, key_id, secret, "CNY"))
    return person_env() | {"PAYCODE_POS_HOME": str(home)}


def test_a_closed_pipe_ends_wallet_history_and_till_query_quietly_with_141(
    live_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fast_keystore(monkeypatch)
    cafe = new_merchant(live_server, "Pipe Cafe")
    home = tmp_path / "phone"
    wallet = new_phone(live_server, home, new_user(live_server), ["v2"])
    paid = charge(cafe.till, code_of(wallet, "v2"), "2.00")
    phone_env = wallet_env()
    pos_env = _till_home(tmp_path / "pos", live_server.url, cafe)
    commands = [
        (["-m", WALLET_MODULE, "--json", "--home", str(home), "history"], phone_env),
        (["-m", POS_MODULE, "--json", "query", paid["payment_id"]], pos_env),
        (["-m", POS_MODULE, "query", paid["payment_id"]], pos_env),
    ]
    for args, env in commands:
        done = _into_closed_pipe(args, env)
        assert (done.returncode, done.stderr) == (EXIT_BROKEN_PIPE, ""), args


def test_a_negative_or_endless_timeout_is_a_typed_usage_error(tmp_path: Path) -> None:
    """`--timeout-s -5` reached the scanner and came back as internal_error."""
    env = _till_home(tmp_path / "pos", "http://127.0.0.1:9")
    video = write_video([np.full((64, 64, 3), 255, np.uint8)] * 2, tmp_path / "clip.avi")
    source = ["--source", f"video:{video}", "--headless"]
    charge_args = ["--json", "charge", "--amount", "1.00", *source]
    for option, value in (
        ("--timeout-s", "-5"),
        ("--timeout-s", "nan"),
        ("--timeout-s", "inf"),
        ("--hold-s", "-1"),
    ):
        done = run_in_process(POS_MODULE, env, *charge_args, option, value)
        error = json.loads(done.stdout)["error"]
        assert done.returncode == 1 and error["code"] == "invalid_argument", (option, value)
        assert error["message"].startswith(option), error


def test_an_unknown_currency_is_reported_as_the_currency_not_the_amount(tmp_path: Path) -> None:
    env = _till_home(tmp_path / "pos", "http://127.0.0.1:9")
    done = run_in_process(
        POS_MODULE, env, "--json", "charge", "--amount", "1.00", "--currency", "XYZ"
    )
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "invalid_argument"
    assert error["message"].startswith("--currency:") and "XYZ" in error["message"]


@pytest.mark.parametrize(
    "url", ["mysql://shop@127.0.0.1/paycode", "oracle://shop@127.0.0.1/paycode"]
)
def test_an_unsupported_database_url_names_the_supported_ones(url: str) -> None:
    env = person_env() | {"PAYCODE_DATABASE_URL": url}
    for args in (["--json", "users", "list"], ["--json", "init-db"]):
        done = run_cli_in_process(env, *args)
        error = json.loads(done.stdout)["error"]
        assert (done.returncode, error["code"]) == (1, "config_invalid"), done.stdout
        assert "sqlite:///" in error["message"] and "postgresql+psycopg://" in error["message"]


def test_opencv_prints_nothing_of_its_own_before_the_tills_error(tmp_path: Path) -> None:
    """A damaged video made OpenCV's AVI reader print "Unexpected element..." on stderr."""
    video = write_video([np.full((64, 64, 3), 255, np.uint8)] * 10, tmp_path / "clip.avi")
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    env = _till_home(tmp_path / "pos", "http://127.0.0.1:9")
    source = ["--source", f"video:{damaged}", "--headless"]
    done = subprocess.run(
        [sys.executable, "-m", POS_MODULE, "charge", "--amount", "1.00", *source],
        capture_output=True,
        text=True,
        errors="replace",  # OpenCV's own messages were not even UTF-8
        env=env,
        cwd=REPO_ROOT,
        timeout=PIPE_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"paycode-pos: error [source_unavailable]: cannot open {damaged} "
        "(is it connected / a video file?)"
    ]


def test_a_count_or_limit_out_of_range_is_named_not_clamped_or_ignored(tmp_path: Path) -> None:
    """`code --show --count -3` did nothing silently and `history --limit 0` asked for 1."""
    env = dict(os.environ)
    for args in (
        ["code", "--show", "--count", "-3"],
        ["code", "--show", "--count", "0"],
        ["history", "--limit", "0"],
        ["history", "--limit", "101"],
    ):
        done = run_in_process(WALLET_MODULE, env, "--json", "--home", str(tmp_path), *args)
        error = json.loads(done.stdout)["error"]
        assert done.returncode == 1 and error["code"] == "invalid_argument", args
        assert error["message"].startswith(args[-2]), error
