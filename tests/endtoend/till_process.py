"""A till (`paycode-pos --json charge ...`) as a process of its own, for tests that send it real
signals: its stderr is read line by line as it runs, so a test can wait for the moment it is
in (scanning, waiting for the customer) before it presses Ctrl-C (SIGINT) or kills it (SIGTERM).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paycode.appkit import rendering
from paycode.merchant_pos import settings
from tests.support.servers import REPO_ROOT, Server
from tests.support.shop import (
    POS_MODULE,
    Merchant,
    charge,
    code_of,
    new_merchant,
    new_phone,
    new_user,
    person_env,
    set_limits,
)

LINE_WAIT_S = 20.0
"""Python and the till's imports start in about a second; a busy CI machine gets more."""
EXIT_WAIT_S = 30.0
LINES_MAX = 10_000


def pos_home(home: Path, server_url: str, merchant: Merchant) -> Path:
    """A configured POS home for `merchant`'s terminal, calling `server_url` (a proxy's, a
    closed port's, or the server's own)."""
    configured = settings.validated(server_url, merchant.key_id, merchant.secret, "CNY")
    settings.save(home, configured)
    return home


def code_waiting_for_the_pin(server: Server, home: Path, shop_name: str) -> tuple[Merchant, Path]:
    """A merchant, and a PNG of a customer's code that `shop_name` will charge only with the
    customer's PIN: the day's one password-free payment is already made. (The caller makes
    wallets fast: tests.support.shop.use_fast_keystore.)"""
    merchant = new_merchant(server, shop_name)
    user = new_user(server, top_up="50.00")
    set_limits(server, user, daily_count_max=1)
    wallet = new_phone(server, home / "phone", user, ["v2"])
    assert charge(merchant.till, code_of(wallet, "v2"))["status"] == "succeeded"
    image = home / "code.png"
    rendering.save_png(rendering.qr_image(code_of(wallet, "v2")), image)
    return merchant, image


@dataclass
class TillProcess:
    """One `paycode-pos --json charge` process; stop it with `signal`, read it with `finish`.
    As a context manager it is killed on the way out if it is still running."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, home: Path, *args: str, display: str | None = None) -> TillProcess:
        """`display`: an X display (":N") for a till with its window; None keeps the caller's."""
        # A till that does not end in time is sent SIGABRT by `finish`: faulthandler then
        # prints where each of its threads was, into the failure's message.
        env = person_env() | {"PAYCODE_POS_HOME": str(home), "PYTHONFAULTHANDLER": "1"}
        if display is not None:
            env["DISPLAY"] = display
        process = subprocess.Popen(
            [sys.executable, "-m", POS_MODULE, "--json", "charge", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        till = cls(process)
        till.reader = threading.Thread(target=till._read_stderr, daemon=True)
        till.reader.start()
        return till

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for _, line in zip(range(LINES_MAX), self.process.stderr, strict=False):
            self.lines.put(line.rstrip("\n"))

    def type_code(self, code: str) -> None:
        """What a barcode gun does: the code and Enter (stdin stays open)."""
        assert self.process.stdin is not None
        self.process.stdin.write(code + "\n")
        self.process.stdin.flush()

    def wait_for_line(self, starting: str, timeout_s: float = LINE_WAIT_S) -> str:
        """The first stderr line that starts with `starting`; fails after `timeout_s`."""
        deadline_s = time.monotonic() + timeout_s
        while (left_s := deadline_s - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left_s)
            except queue.Empty:
                break
            self.seen.append(line)
            if line.startswith(starting):
                return line
        raise AssertionError(f"no stderr line starting {starting!r}; saw {self.seen}")

    def signal(self, number: signal.Signals) -> None:
        os.kill(self.process.pid, number)

    def finish(self) -> tuple[int, dict[str, Any], str]:
        """(exit status, the --json object on stdout, all of stderr) once the till ends."""
        try:
            self.process.wait(timeout=EXIT_WAIT_S)  # a few lines of output never fill the pipe
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            self.process.wait(timeout=EXIT_WAIT_S)
            if self.reader is not None:
                self.reader.join(timeout=EXIT_WAIT_S)
            while not self.lines.empty():
                self.seen.append(self.lines.get_nowait())
            where = "\n".join(self.seen[-60:])
            message = f"the till did not end in {EXIT_WAIT_S:g} s; it was at:\n{where}"
            raise AssertionError(message) from None
        assert self.process.stdout is not None and self.reader is not None
        stdout = self.process.stdout.read()
        self.reader.join(timeout=EXIT_WAIT_S)
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())
        stderr = "\n".join(self.seen)
        assert stdout, f"nothing on stdout; exit {self.process.returncode}, stderr: {stderr}"
        return self.process.returncode, json.loads(stdout), stderr

    def __enter__(self) -> TillProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=EXIT_WAIT_S)
