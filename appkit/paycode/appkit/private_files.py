"""Files only their owner may read: keystores, a till's secret, a code's PNG.

A payment code, a device key or a terminal secret is a bearer credential, so every such file
is written 0600, through a temporary file in the same folder that is fsynced and renamed over
the target: a reader sees the old file or the new one, never half of one, and a crash leaves
no readable partial copy behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically replace `path` with `data`, readable by the owner only. A new parent folder
    is made 0700; an existing one keeps its mode."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
