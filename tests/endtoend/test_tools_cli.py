"""paycode-pos inspect, paycode-server versions, the console scripts' --help, and `make demo`.

`inspect` and `versions` run their console script's main(argv) in this process
(tests/support/servers.py, run_in_process): what they print is the subject. The scripts' help
and usage errors (exit codes 0 and 2) and the demo run as processes of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paycode.appkit.rendering import qr_image, save_png
from tests.support.protocol import load_vectors
from tests.support.servers import run_in_process

REPO = Path(__file__).resolve().parents[2]
EMV_EXAMPLE = "hQVDUFYwMWEaTwegAAAAVVVVVw8SNFZ4kBI0WNGRIgESNF8="


def run(
    module: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def in_process(
    module: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`run`, but the console script's main(argv) in this process."""
    return run_in_process(module, {**os.environ, **(env or {})}, *args)


def inspect_json(*args: str) -> dict[str, object]:
    done = in_process("paycode.merchant_pos.cli", "inspect", *args, "--json")
    assert done.returncode == 0, done.stderr
    reply: dict[str, object] = json.loads(done.stdout)
    return reply


@pytest.mark.parametrize("vector", load_vectors()[::4], ids=lambda v: v["version"])
def test_inspect_names_each_version(vector: dict[str, object]) -> None:
    code = str(vector["code"])
    (found,) = inspect_json("--text", code)["codes"]  # type: ignore[misc]
    assert found["kind"] == "payment_code" and found["version"] == vector["version"]
    assert found["well_formed"] is True
    assert found["text"] == code  # whole: a long payload is checked by reading it (issue 20)


def test_inspect_flags_a_mistyped_numeric_code() -> None:
    code = str(load_vectors()[0]["code"])
    typo = code[:5] + str((int(code[5]) + 1) % 10) + code[6:]
    (found,) = inspect_json("--text", typo)["codes"]  # type: ignore[misc]
    assert found["well_formed"] is False and found["error"] == "code_malformed"


def test_inspect_reads_emv_cpm_and_foreign_text() -> None:
    (emv,) = inspect_json("--text", EMV_EXAMPLE)["codes"]  # type: ignore[misc]
    assert emv["kind"] == "emv_cpm" and emv["applications"][0]["aid"] == "A0000000555555"
    (url,) = inspect_json("--text", "https://example.com/menu")["codes"]  # type: ignore[misc]
    assert url["kind"] == "not_ours"


def test_inspect_image(tmp_path: Path) -> None:
    code = str(load_vectors()[-1]["code"])
    save_png(qr_image(code), tmp_path / "code.png")
    (found,) = inspect_json("--image", str(tmp_path / "code.png"))["codes"]  # type: ignore[misc]
    assert found["format"] == "qr" and found["version"] == "v3"


def test_inspect_errors_have_codes_and_no_traceback(tmp_path: Path) -> None:
    missing = in_process(
        "paycode.merchant_pos.cli", "inspect", "--image", str(tmp_path / "none.png")
    )
    assert missing.returncode == 1 and "[image_unreadable]" in missing.stderr
    blank = tmp_path / "blank.png"
    save_png(qr_image("x").resize((8, 8)).point(lambda _: 255), blank)
    empty = in_process("paycode.merchant_pos.cli", "--json", "inspect", "--image", str(blank))
    assert empty.returncode == 1
    assert json.loads(empty.stdout)["error"]["code"] == "no_code_found"
    for done in (missing, empty):
        assert "Traceback" not in done.stderr + done.stdout


def test_server_versions_lists_three_live_versions(tmp_path: Path) -> None:
    """The statuses are the database's (server/lifecycle.py): a fresh one has them all active."""
    env = {"PAYCODE_INSTANCE": str(tmp_path), "PAYCODE_DATABASE_URL": ""}
    assert in_process("paycode.server.cli", "init-db", env=env).returncode == 0
    done = in_process("paycode.server.cli", "versions", "--json", env=env)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["versions"]
    assert [r["version"] for r in rows] == ["v1", "v2", "v3"]
    assert all(r["status"] == "active" for r in rows)


@pytest.mark.parametrize(
    "module", ["paycode.merchant_pos.cli", "paycode.server.cli", "paycode.client.cli"]
)
def test_help_and_bare_invocation(module: str) -> None:
    assert run(module, "--help").returncode == 0
    bare = run(module)
    assert bare.returncode == 2 and "usage" in bare.stderr.lower()


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scripts.demo"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for version in ("v1", "v2", "v3"):
        assert f"   {version}: " in done.stdout
    assert done.stdout.count("  succeeded ") == 3
    assert "refused: code_replayed" in done.stdout
    assert "alice's balance: 76.30 CNY" in done.stdout
    assert "a 6.00 CNY charge answers pending_confirmation" in done.stdout
    assert "the till polls and sees succeeded" in done.stdout
    assert "her balance: 70.30 CNY" in done.stdout
    assert (tmp_path / "demo-out" / "v3.png").exists()
