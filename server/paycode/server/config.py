r"""Server configuration: one object, read from the environment once at start (never per
request) by `ServerConfig.from_env`, and handed to `create_app`, the worker and the commands.

PAYCODE_DATABASE_URL   SQLAlchemy URL; default an SQLite file in the instance folder
PAYCODE_INSTANCE       instance folder (database, master key files); default the platform's
                       data folder: $XDG_DATA_HOME/paycode or ~/.local/share/paycode (Linux),
                       ~/Library/Application Support/paycode (macOS), %APPDATA%\paycode
                       (Windows): the same bank whatever folder a command runs from
PAYCODE_MASTER_KEY_ID  the current master key: new secrets are sealed under it, and its id is
                       stored with every row; default "mk1"
PAYCODE_MASTER_KEY     base64 of 32 bytes: the current key
PAYCODE_MASTER_KEYS    more keys as "ID:BASE64,ID:BASE64" (older keys during a rotation)
instance/master-ID.key a key file (0600, base64) per key id
instance/master.key    the current key when no other source names it; created at first start
PAYCODE_PROXY_HOPS     reverse proxies in front of the server that append to X-Forwarded-For
                       (nginx: 1); the client address is then read from that header, N
                       entries from its right end. Default 0: the TCP peer. Set it only when
                       nothing but the proxy can reach the server's port
PAYCODE_VERSION_STATUSES_TTL_S
                       test knob: seconds a worker caches the code-version statuses; unset in
                       production (server.lifecycle.STATUSES_TTL_S, 5 s). The test suite sets
                       it on its own servers so that a lifecycle change shows in about a second

The settings of the parts are fields of it, each parsed from the same environment:
`guard` (PAYCODE_GUESS_*, paycode.server.safety.guard), `limits` (PAYCODE_PINLESS_*,
PAYCODE_CODE_PAYMENT_MAX, PAYCODE_CONFIRM_WINDOW_S, PAYCODE_LIMIT_DAY_OFFSET_MINUTES,
paycode.server.safety.limits), `delivery` (PAYCODE_NOTIFY_*, paycode.server.notifications.delivery),
`settlement` (PAYCODE_FEE_BPS, paycode.server.books.settlement), `offline` (PAYCODE_OFFLINE_*,
paycode.server.safety.offline_settings), `metrics`
(PAYCODE_METRICS_TOKEN, paycode.server.operations.observability) and `charge_batch`
(PAYCODE_CHARGE_BATCH, paycode.server.charge.batch_settings); docs/operations.md lists them.

Every configured key opens the rows sealed under its id, so a master-key rotation
(docs/operations.md) adds the new key next to the old one, makes it current, re-wraps the rows
(`paycode-server keys rotate-master`), then drops the old key. One id given two different keys
is a configuration error, never a guess.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from paycode.server.books.settlement import SettlementSettings
from paycode.server.charge.batch_settings import BatchSettings
from paycode.server.notifications.delivery import DeliverySettings
from paycode.server.operations.observability import MetricsAccess
from paycode.server.safety.guard import GuardSettings
from paycode.server.safety.limits import LimitSettings
from paycode.server.safety.offline_settings import OfflineSettings
from paycode.shared.errors import ConfigError

MASTER_KEY_BYTES = 32
MASTER_KEY_FILE = "master.key"
MASTER_KEY_FILE_GLOB = "master-*.key"
MASTER_KEYS_MAX = 16
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,16}")
"""Key ids are stored in 16-character columns and appear in file names."""
STATUSES_TTL_ENV = "PAYCODE_VERSION_STATUSES_TTL_S"
PROXY_HOPS_ENV = "PAYCODE_PROXY_HOPS"
PROXY_HOPS_MAX = 8
PUBLIC_URL_ENV = "PAYCODE_PUBLIC_URL"
PUBLIC_URL_CHARS_MAX = 200


@dataclass(frozen=True)
class ServerConfig:
    database_url: str
    instance_path: Path
    master_keys: dict[str, bytes] = field(repr=False)
    """key id -> AES-256 key; decrypts rows written under any of them."""
    master_key_id: str = "mk1"
    """The key new rows are encrypted under (rotation: add a new id, re-wrap, drop the old)."""
    session_ttl_s: int = 300
    request_skew_s_max: int = 300
    body_bytes_max: int = 64 * 1024
    testing: bool = False
    proxy_hops: int = 0
    """Trusted reverse proxies in front (X-Forwarded-For); 0: the TCP peer is the client."""
    statuses_ttl_s: float | None = None
    """How long a worker caches the code-version statuses; None: server.lifecycle.STATUSES_TTL_S.
    Only tests set it (PAYCODE_VERSION_STATUSES_TTL_S), to see lifecycle changes sooner."""
    guard: GuardSettings = field(default_factory=GuardSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    settlement: SettlementSettings = field(default_factory=SettlementSettings)
    offline: OfflineSettings = field(default_factory=OfflineSettings)
    metrics: MetricsAccess = field(default_factory=MetricsAccess)
    charge_batch: BatchSettings = field(default_factory=BatchSettings)
    public_url: str | None = None
    """Where customers reach this server (PAYCODE_PUBLIC_URL, e.g. https://pay.example.com):
    the base of a checkout's pay_url. None: the address the creating request arrived at."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ServerConfig:
        env = os.environ if env is None else env
        instance = instance_folder(env)
        url = env.get("PAYCODE_DATABASE_URL") or f"sqlite:///{instance / 'paycode.db'}"
        keys, key_id = master_keys(env, instance)
        values: dict[str, object] = {
            "database_url": url,
            "instance_path": instance,
            "master_keys": keys,
            "master_key_id": key_id,
            "statuses_ttl_s": _seconds(env, STATUSES_TTL_ENV),
            "proxy_hops": _proxy_hops(env),
            "guard": GuardSettings.parse(env),
            "limits": LimitSettings.parse(env),
            "delivery": DeliverySettings.parse(env),
            "settlement": SettlementSettings.parse(env),
            "offline": OfflineSettings.parse(env),
            "metrics": MetricsAccess.parse(env),
            "charge_batch": BatchSettings.parse(env),
            "public_url": public_url_of(env),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def instance_folder(env: Mapping[str, str], platform: str = sys.platform) -> Path:
    """PAYCODE_INSTANCE, else the platform's per-user data folder: never the current folder,
    where a command run from elsewhere would silently open a second, empty bank."""
    if env.get("PAYCODE_INSTANCE"):
        return Path(env["PAYCODE_INSTANCE"]).expanduser().resolve()
    home = Path(env.get("HOME") or Path.home())
    if platform == "darwin":
        base = home / "Library" / "Application Support"
    elif platform.startswith("win"):
        base = Path(env.get("APPDATA") or home / "AppData" / "Roaming")
    else:
        base = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    return (base / "paycode").resolve()


def public_url_of(env: Mapping[str, str]) -> str | None:
    """PAYCODE_PUBLIC_URL without its trailing slash: an absolute http(s) URL with no query or
    fragment; None when unset."""
    raw = (env.get(PUBLIC_URL_ENV) or "").strip()
    if not raw:
        return None
    scheme, _, rest = raw.partition("://")
    host = rest.split("/", 1)[0]
    if (
        scheme not in ("https", "http")
        or not host
        or "@" in host
        or len(raw) > PUBLIC_URL_CHARS_MAX
        or not (raw.isascii() and raw.isprintable())
        or any(char in raw for char in " ?#")
    ):
        raise ConfigError(
            f"{PUBLIC_URL_ENV} must be an absolute http(s) URL such as https://pay.example.com "
            f"(no query or fragment, at most {PUBLIC_URL_CHARS_MAX} characters)"
        )
    return raw.rstrip("/")


def _proxy_hops(env: Mapping[str, str]) -> int:
    raw = (env.get(PROXY_HOPS_ENV) or "0").strip()
    if not (raw.isascii() and raw.isdigit()) or int(raw) > PROXY_HOPS_MAX:
        raise ConfigError(
            f"{PROXY_HOPS_ENV} must be a whole number 0-{PROXY_HOPS_MAX}: the reverse proxies "
            "in front of the server (nginx alone: 1)"
        )
    return int(raw)


def _seconds(env: Mapping[str, str], name: str) -> float | None:
    """A non-negative number of seconds from `name`; None when it is unset or empty."""
    raw = env.get(name)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError as error:
        raise ConfigError(f"{name} must be a number of seconds") from error
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a non-negative number of seconds")
    return value


def master_keys(env: Mapping[str, str], instance: Path) -> tuple[dict[str, bytes], str]:
    """(key id -> key, current id) from the environment and the instance folder."""
    current = _key_id(env.get("PAYCODE_MASTER_KEY_ID") or "mk1", "PAYCODE_MASTER_KEY_ID")
    keys: dict[str, bytes] = {}
    sources: dict[str, str] = {}
    for key_id, key, source in _configured_keys(env, instance, current):
        if key_id in keys and keys[key_id] != key:
            raise ConfigError(
                f"{sources[key_id]} and {source} hold different keys for id {key_id!r}"
            )
        keys[key_id], sources[key_id] = key, source
    legacy = instance / MASTER_KEY_FILE
    if current not in keys and keys and not legacy.exists():
        # Never a fresh key beside configured ones: each host would make its own.
        raise ConfigError(
            f"PAYCODE_MASTER_KEY_ID is {current!r}, but the configured keys are "
            f"{', '.join(sorted(keys))}: add {current} (PAYCODE_MASTER_KEY, PAYCODE_MASTER_KEYS "
            f"or master-{current}.key)"
        )
    if current not in keys:  # the legacy file, made on a first start with no key configured
        keys[current] = _key_file(legacy, create=True)
    elif legacy.exists() and _key_file(legacy) != keys[current]:
        raise ConfigError(
            f"{legacy} is the key of the current id {current!r}, but {sources[current]} holds "
            f"another one: rename {MASTER_KEY_FILE} to master-<its id>.key (docs/operations.md)"
        )
    if len(keys) > MASTER_KEYS_MAX:
        raise ConfigError(f"at most {MASTER_KEYS_MAX} master keys may be configured")
    return keys, current


def _configured_keys(
    env: Mapping[str, str], instance: Path, current: str
) -> list[tuple[str, bytes, str]]:
    """(id, key, where it came from) of every explicitly configured key."""
    found: list[tuple[str, bytes, str]] = []
    if env.get("PAYCODE_MASTER_KEY"):
        key = _decode(env["PAYCODE_MASTER_KEY"], "PAYCODE_MASTER_KEY")
        found.append((current, key, "PAYCODE_MASTER_KEY"))
    entries = [e.strip() for e in (env.get("PAYCODE_MASTER_KEYS") or "").split(",") if e.strip()]
    if len(entries) > MASTER_KEYS_MAX:
        raise ConfigError(f"PAYCODE_MASTER_KEYS holds more than {MASTER_KEYS_MAX} keys")
    for entry in entries:
        key_id, sep, value = entry.partition(":")
        if not sep:
            raise ConfigError("PAYCODE_MASTER_KEYS entries are ID:BASE64, comma-separated")
        key_id = _key_id(key_id.strip(), "PAYCODE_MASTER_KEYS")
        source = f"PAYCODE_MASTER_KEYS[{key_id}]"
        found.append((key_id, _decode(value.strip(), source), source))
    files = sorted(instance.glob(MASTER_KEY_FILE_GLOB)) if instance.is_dir() else []
    if len(files) > MASTER_KEYS_MAX:
        raise ConfigError(f"more than {MASTER_KEYS_MAX} {MASTER_KEY_FILE_GLOB} files in {instance}")
    for path in files:
        key_id = _key_id(path.name.removeprefix("master-").removesuffix(".key"), str(path))
        found.append((key_id, _key_file(path), str(path)))
    return found


def _key_id(key_id: str, source: str) -> str:
    if KEY_ID_PATTERN.fullmatch(key_id) is None:
        raise ConfigError(f"{source}: a key id has 1-16 characters from A-Z a-z 0-9 _ . -")
    return key_id


def _decode(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ConfigError(f"{source} is not base64") from error
    if len(key) != MASTER_KEY_BYTES:
        raise ConfigError(f"{source} must decode to 32 bytes")
    return key


def _key_file(path: Path, *, create: bool = False) -> bytes:
    """Read a key file; `create`: make it first (0600, exclusively) if it does not exist."""
    if create:
        _create_key_file(path)
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"{path} must be readable by its owner only (chmod 600)")
    try:
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ConfigError(f"{path} does not hold a base64 key") from error
    if len(key) != MASTER_KEY_BYTES:
        raise ConfigError(f"{path} must hold 32 bytes of key")
    return key


def _create_key_file(path: Path) -> None:
    """A fresh random key, written 0600 and exclusively: two first starts keep one key."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64encode(os.urandom(MASTER_KEY_BYTES)) + b"\n")
