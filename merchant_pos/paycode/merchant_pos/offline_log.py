"""The till's durable offline log: every offline acceptance, and what the server said of it.

docs/offline.md section 4.3. `offline/acceptances.log` in the POS home, 0600, opened O_APPEND:
one canonical JSON object per line (`kind` "accept" or "synced"), the `accept` lines chained
by SHA-256 so the server can tell a gap or an edit (section 6.1). One writer at a time holds
the `fcntl` lock beside it for a whole sale or sync (`open_log`).

An append returns only after the line and (for a new file) the folder are fsynced: the till
shows PAID OFFLINE after it returns, so whatever a cashier saw survives a crash. A crash
mid-write leaves at most a torn last line, which the next start truncates (it was never
acknowledged). A bad line before the last cannot come from a crash: the log refuses to open
(`offline_log_damaged`) rather than skip it, since skipping would break the chain or hide a
sale. Everything the sale rules ask (section 4.2) is rebuilt from the file at each start.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from paycode.appkit.private_files import FILE_MODE, FOLDER_MODE, write_private
from paycode.merchant_pos.offline_records import (
    FORMAT,
    GENESIS_HASH,
    MOVES_NOTHING,
    RECORD_BYTES_MAX,
    Acceptance,
    LineInvalid,
    Synced,
    chain_hash,
    checked_order,
    encode,
    new_acceptance_id,
    parse,
)
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import PaycodeError

LOG_FOLDER = "offline"
LOG_FILE = "acceptances.log"
LOCK_FILE = "acceptances.lock"
PENDING_FILE = "sale.pending"
RECORDS_MAX = 20_000
"""Lines read at a start. A log is rotated once all of it is synced (section 4.3), and a till
holds at most `till_count_max` (200 by default) unsynced: a longer file is refused unread."""
LIFETIME_MAX_S = 259_200
"""The longest certificate lifetime (docs/offline.md 2.3). A log rotates only once its newest
acceptance is older: every certificate in it has expired, so forgetting its codes and sums
(section 4.2 steps 7 and 8) cannot let one certificate pay this till twice."""
ROTATED_KEEP_S = 90 * 86_400
FOLDER_ENTRIES_MAX = 10_000
_ROTATED = re.compile(r"acceptances\.([1-9][0-9]{0,15})\.log", re.ASCII)


class OfflineLogDamaged(PaycodeError):
    """A line before the last is bad (or the file is too large): no offline sale, no sync,
    until an operator looks."""

    code = ErrorCode.OFFLINE_LOG_DAMAGED


class OfflineRecordInvalid(PaycodeError):
    """A record the caller asked to append would not read back (shape, bounds, a repeat)."""

    code = ErrorCode.INVALID_ARGUMENT


@dataclass(frozen=True)
class CertificateUse:
    """What this till accepted on one certificate: the sums of section 4.2 steps 8 and 9."""

    sum_minor: int = 0
    count: int = 0
    last_at_s: int = 0


@dataclass(frozen=True)
class InterruptedSale:
    """A sale that was deciding when the till stopped; `acceptance` None means NOT PAID."""

    order: str
    acceptance: Acceptance | None


@dataclass
class _Index:
    """What the file says, rebuilt at each start; the file is the only state (4.3)."""

    accepts: dict[str, Acceptance] = field(default_factory=dict)
    """By id, in seq order (dicts keep insertion order)."""
    synced: dict[str, Synced] = field(default_factory=dict)
    by_order: dict[str, Acceptance] = field(default_factory=dict)
    counters: set[tuple[str, int]] = field(default_factory=set)
    code_digests: set[str] = field(default_factory=set)
    certificates: dict[str, CertificateUse] = field(default_factory=dict)
    last_seq: int = 0
    last_hash: str = GENESIS_HASH

    def check(self, record: Acceptance | Synced) -> None:
        if isinstance(record, Synced):
            accepted = self.accepts.get(record.id)
            if accepted is None or record.id in self.synced:
                raise LineInvalid("synced names no unsynced acceptance")
            total_minor = record.paid_minor + record.loss_minor
            if total_minor != accepted.amount_minor and record.result not in MOVES_NOTHING:
                raise LineInvalid("paid and loss do not add up to the amount")
            return
        if record.seq != self.last_seq + 1 or record.prev != self.last_hash:
            raise LineInvalid(f"seq {record.seq} does not follow the chain")
        if record.id in self.accepts or record.order in self.by_order:
            raise LineInvalid("acceptance id or order id repeated")
        if (record.cert, record.counter) in self.counters:
            raise LineInvalid("certificate counter repeated")

    def add(self, record: Acceptance | Synced, line: bytes) -> None:
        self.check(record)
        if isinstance(record, Synced):
            self.synced[record.id] = record
            return
        self.accepts[record.id] = self.by_order[record.order] = record
        self.counters.add((record.cert, record.counter))
        self.code_digests.add(hashlib.sha256(record.code.encode()).hexdigest())
        use = self.certificates.get(record.cert, CertificateUse())
        self.certificates[record.cert] = CertificateUse(
            use.sum_minor + record.amount_minor, use.count + 1, max(use.last_at_s, record.at_s)
        )
        self.last_seq, self.last_hash = record.seq, chain_hash(line)


def _read_bounded(path: Path, bytes_max: int) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(bytes_max + 1)
    if len(data) > bytes_max:
        raise OfflineLogDamaged(f"{path.name} is larger than {bytes_max} bytes: rotate it first")
    return data


def _fsync_folder(folder: Path) -> None:
    """A created, renamed or removed name is durable only once its folder is fsynced."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rotated(folder: Path) -> list[tuple[int, Path]]:
    """The rotated logs, `acceptances.<last seq>.log`, oldest first."""
    entries = itertools.islice(folder.iterdir(), FOLDER_ENTRIES_MAX)
    found = [(match, path) for path in entries if (match := _ROTATED.fullmatch(path.name))]
    return sorted((int(match[1]), path) for match, path in found)


def _chain_base(folder: Path) -> _Index:
    """An empty index that continues the chain of the newest rotated log: seq and `prev`
    never restart, since the server checks them across rotations (section 6.1)."""
    rotated = _rotated(folder)
    if not rotated:
        return _Index()
    seq, path = rotated[-1]
    lines = _read_bounded(path, RECORDS_MAX * (RECORD_BYTES_MAX + 1)).split(b"\n")
    for line in reversed(lines[-RECORDS_MAX - 1 : -1]):
        try:
            record = parse(line)
        except LineInvalid as bad:
            raise OfflineLogDamaged(f"{path.name}: {bad.message}") from bad
        if isinstance(record, Acceptance):
            if record.seq != seq:
                break
            return _Index(last_seq=seq, last_hash=chain_hash(line))
    raise OfflineLogDamaged(f"{path.name} does not end its chain at seq {seq}")


def _recover(path: Path, index: _Index) -> int:
    """Reads the log into `index`; truncates a torn last line. Returns the bytes cut off."""
    data = _read_bounded(path, RECORDS_MAX * (RECORD_BYTES_MAX + 1))
    *lines, tail = data.split(b"\n")
    if len(lines) > RECORDS_MAX:
        raise OfflineLogDamaged(f"{path.name} has more than {RECORDS_MAX} lines: rotate it first")
    good_bytes = 0
    for number, line in enumerate(lines, start=1):
        try:
            index.add(parse(line), line)
        except LineInvalid as bad:
            if number < len(lines) or tail:
                raise OfflineLogDamaged(
                    f"{path.name} line {number}: {bad.message}; not a torn write: operator, look"
                ) from bad
            break  # a complete last line that does not follow: torn, never acknowledged
        good_bytes += len(line) + 1
    cut_bytes = len(data) - good_bytes
    if cut_bytes:
        with path.open("r+b") as handle:
            handle.truncate(good_bytes)
            handle.flush()
            os.fsync(handle.fileno())
    return cut_bytes


def _read_pending(path: Path) -> str | None:
    try:
        data = _read_bounded(path, RECORD_BYTES_MAX)
    except FileNotFoundError:
        return None
    try:
        fields = json.loads(data)
        if not isinstance(fields, dict) or set(fields) != {"order", "v"} or fields["v"] != FORMAT:
            raise LineInvalid("not a sale.pending record")
        return checked_order(fields)
    except (ValueError, UnicodeDecodeError) as bad:  # written atomically: not a torn write
        raise OfflineLogDamaged(f"{path.name} is not a pending sale's order id") from bad


class OfflineLog:
    """The log as one holder of the lock sees it. Made by `open_log` only."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOG_FILE
        self._index = _chain_base(folder)
        self._fd: int | None = None
        self._usable = True
        self.truncated_bytes = 0
        """Bytes of a torn last line cut off at this start (0: the file was whole)."""
        if self.path.exists():
            self.truncated_bytes = _recover(self.path, self._index)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            os.fchmod(self._fd, FILE_MODE)
        pending = _read_pending(folder / PENDING_FILE)
        self._interrupted = (
            None if pending is None else InterruptedSale(pending, self.by_order(pending))
        )

    # -- appending ------------------------------------------------------------------------
    def accept(
        self, *, order: str, cert: str, counter: int, code: str, amount_minor: int,
        currency: str, at_s: int, acceptance_id: str | None = None,
    ) -> Acceptance:  # fmt: skip
        """Appends one acceptance; durable when it returns: only then show PAID OFFLINE."""
        record = Acceptance(
            id=acceptance_id or new_acceptance_id(), seq=self._index.last_seq + 1,
            prev=self._index.last_hash, order=order, cert=cert, counter=counter, code=code,
            amount_minor=amount_minor, currency=currency, at_s=at_s,
        )  # fmt: skip
        self._append(record)
        return record

    def mark_synced(
        self, acceptance_id: str, *, result: str, paid_minor: int, loss_minor: int
    ) -> Synced:
        """Appends the server's final answer for one acceptance; durable when it returns."""
        record = Synced(acceptance_id, result, paid_minor, loss_minor)
        self._append(record)
        return record

    def _append(self, record: Acceptance | Synced) -> None:
        if not self._usable:
            raise OfflineLogDamaged("an append failed part-way: open the log again")
        try:
            line = encode(record.fields())
            if parse(line) != record:  # never write what the next start would not read
                raise LineInvalid("does not read back")
            self._index.check(record)
        except (LineInvalid, TypeError) as bad:
            why = bad.message if isinstance(bad, LineInvalid) else str(bad)
            raise OfflineRecordInvalid(f"not appended: {why}") from bad
        self._write(line + b"\n")
        self._index.add(record, line)

    def _write(self, line: bytes) -> None:
        created = self._fd is None
        if self._fd is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, FILE_MODE)
        # Until the fsync returns the file's tail is unknown; a new start finds out.
        self._usable = False
        if os.write(self._fd, line) != len(line):
            raise OSError(errno.EIO, "short write to the offline log")
        os.fsync(self._fd)
        if created:
            _fsync_folder(self.folder)
        self._usable = True

    # -- rotation -------------------------------------------------------------------------
    def rotate(self, *, now_s: int) -> Path | None:
        """Renames the log `acceptances.<last seq>.log` once every acceptance in it is synced
        and older than `LIFETIME_MAX_S`; the next acceptance continues its chain. Returns the
        new name, or None when the log may not rotate yet."""
        newest_s = max((a.at_s for a in self._index.accepts.values()), default=None)
        if self._fd is None or newest_s is None or self.unsynced():
            return None
        if now_s - newest_s < LIFETIME_MAX_S:
            return None
        target = self.folder / f"acceptances.{self.last_seq}.log"
        os.close(self._fd)
        self._fd = None
        self.path.rename(target)  # seqs only grow: the name is new
        _fsync_folder(self.folder)
        self._index = _Index(last_seq=self.last_seq, last_hash=self.last_hash)
        return target

    def prune(self, *, now_s: int) -> list[Path]:
        """Deletes rotated logs unchanged for `ROTATED_KEEP_S`, except the newest: it holds
        the end of the chain the next acceptance continues."""
        old = [path for _, path in _rotated(self.folder)[:-1]]
        gone = [path for path in old if now_s - path.stat().st_mtime >= ROTATED_KEEP_S]
        for path in gone:
            path.unlink()
        if gone:
            _fsync_folder(self.folder)
        return gone

    # -- the interrupted sale -------------------------------------------------------------
    def begin_sale(self, order: str) -> None:
        """Marks a sale as deciding (durably), before any of section 4.2 runs."""
        checked_order({"order": order})
        write_private(self.folder / PENDING_FILE, encode({"order": order, "v": FORMAT}))
        _fsync_folder(self.folder)  # the rename, not only the bytes
        self._interrupted = None

    def end_sale(self) -> None:
        """The outcome was shown (or the interrupted one reported): nothing is deciding."""
        (self.folder / PENDING_FILE).unlink(missing_ok=True)
        _fsync_folder(self.folder)
        self._interrupted = None

    def interrupted_sale(self) -> InterruptedSale | None:
        """The sale a crash interrupted, found at this start: report it before anything."""
        return self._interrupted

    # -- queries --------------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        return self._index.last_seq

    @property
    def last_hash(self) -> str:
        return self._index.last_hash

    def acceptance(self, acceptance_id: str) -> Acceptance | None:
        return self._index.accepts.get(acceptance_id)

    def by_order(self, order: str) -> Acceptance | None:
        return self._index.by_order.get(order)

    def synced(self, acceptance_id: str) -> Synced | None:
        return self._index.synced.get(acceptance_id)

    def unsynced(self) -> list[Acceptance]:
        """Every acceptance without a synced record, in seq order: what sync sends."""
        return [a for a in self._index.accepts.values() if a.id not in self._index.synced]

    def has_code(self, code: str) -> bool:
        return hashlib.sha256(code.encode()).hexdigest() in self._index.code_digests

    def has_counter(self, cert: str, counter: int) -> bool:
        return (cert, counter) in self._index.counters

    def certificate_use(self, cert: str) -> CertificateUse:
        return self._index.certificates.get(cert, CertificateUse())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._usable = False


@contextmanager
def open_log(home: Path) -> Iterator[OfflineLog]:
    """The log under its lock, recovered, for one sale, sync or query. Blocks while another
    process holds it: a sale and a sync never interleave their lines or their indexes."""
    folder = home / LOG_FOLDER
    if not folder.is_dir():
        home.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
        folder.mkdir(exist_ok=True, mode=FOLDER_MODE)
        _fsync_folder(home)
    lock_fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        log = OfflineLog(folder)
        try:
            yield log
        finally:
            log.close()
    finally:
        os.close(lock_fd)  # releases the lock
