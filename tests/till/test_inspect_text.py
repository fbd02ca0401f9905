"""`paycode-pos inspect` (issue 20, item 5): the whole decoded text, escaped for the terminal,
and EMV-looking text that does not parse gets the EMV parser's typed error with its offset.

In this process: the command's output is the subject, not the process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from paycode.merchant_pos.identify import describe
from tests.support.servers import run_in_process
from tests.support.shop import POS_MODULE, person_env

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "mpm_payloads.json").read_text("utf-8")
)
PAYNOW = next(v["payload"] for v in VECTORS["valid"] if v["name"] == "paynow_odoo")


def _inspect(*args: str) -> subprocess.CompletedProcess[str]:
    return run_in_process(POS_MODULE, person_env(), "inspect", *args)


def _inspect_json(text: str) -> dict[str, Any]:
    done = run_in_process(POS_MODULE, person_env(), "--json", "inspect", "--text", text)
    assert done.returncode == 0, done.stdout + done.stderr
    (found,) = json.loads(done.stdout)["codes"]
    return dict(found)


def test_inspect_json_carries_the_whole_text_of_a_long_payload_not_a_44_character_preview() -> None:
    assert len(PAYNOW) > 100
    found = _inspect_json(PAYNOW)
    assert found["text"] == PAYNOW and found["length"] == len(PAYNOW)
    assert "text_preview" not in found


def test_inspect_prints_the_whole_text_escaped_for_the_terminal() -> None:
    hostile = PAYNOW[:60] + "\x1b[2J" + PAYNOW[60:]
    done = _inspect("--text", hostile)
    assert done.returncode == 0, done.stderr
    assert PAYNOW[:60] + "\\x1b[2J" + PAYNOW[60:] in done.stdout
    assert "\x1b" not in done.stdout and "..." not in done.stdout


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("000X016304EAB2", 2),  # the CRC tag at its place says EMV; ID 00's length is "0X"
        ("0001016304EAB2", 7),  # ID 00 with a one-digit-long format indicator
        (PAYNOW[6:], 134),  # a payload without its format indicator: the CRC tag says EMV
    ],
    ids=["length-0X", "format-cut", "no-format-indicator"],
)
def test_emv_looking_text_that_fails_to_parse_gets_the_parsers_error_naming_the_offset(
    text: str, offset: int
) -> None:
    found = _inspect_json(text)
    assert found["kind"] == "emv_mpm" and found["well_formed"] is False
    assert (found["error"], found["offset"]) == ("code_malformed", offset)
    assert f"offset {offset}" in found["message"]
    human = _inspect("--text", text)
    assert f"offset {offset}" in human.stdout and "not a payment code" not in human.stdout


@pytest.mark.parametrize(
    "text", ["4006381333931", "https://example.com/item/6304", "hello", "96304ABCD1"]
)
def test_text_that_does_not_look_like_emv_is_still_not_ours(text: str) -> None:
    assert describe(text)["kind"] == "not_ours"
