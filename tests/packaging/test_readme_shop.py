"""README "Running a shop" runs as written from any folder: every operator command in it, each
from a different working directory, reaches the one bank `init-db` made (issue 19, item 17)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.support.servers import REPO_ROOT, run_cli_in_process

LONG_RUNNING = {"serve", "worker"}
"""Commands that run until stopped; the live-server tests cover them."""
INTERACTIVE = {("merchants", "set-password")}
"""Asks for the password twice on a terminal; tests/server/test_admin.py feeds it."""
PASSWORD = "correct horse battery"


def _shop_commands() -> list[list[str]]:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Running a shop", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None, "README's Running a shop lost its command block"
    commands = []
    for line in block.group(1).splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0] != "paycode-server":
            continue
        if words[1] in LONG_RUNNING or tuple(words[1:3]) in INTERACTIVE:
            continue
        commands.append(words[1:])
    return commands


def test_the_readme_shop_commands_reach_one_bank_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = _shop_commands()
    assert [words[0] for words in commands[:2]] == ["init-db", "users"], commands
    env = {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    for number, words in enumerate(commands):
        folder = tmp_path / f"folder-{number}"
        folder.mkdir()
        monkeypatch.chdir(folder)
        stdin = PASSWORD + "\n" if "--password-stdin" in words else None
        done = run_cli_in_process(env, *words, stdin=stdin)
        assert done.returncode == 0, (words, done.stdout, done.stderr)
    monkeypatch.chdir(tmp_path)
    listed = run_cli_in_process(env, "users", "list")
    assert re.search(r"alice\b.*100\.00", listed.stdout), listed.stdout
    bank = tmp_path / "home" / ".local" / "share" / "paycode"
    assert bank.is_dir() and not any((tmp_path / "folder-0").iterdir())
