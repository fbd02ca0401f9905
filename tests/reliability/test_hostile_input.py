"""5. Hostile input: every parser of external input raises only the typed errors of
shared/errors.py (or returns), the HTTP API never answers 5xx to anything schemathesis makes
from its own OpenAPI document, and hand-made hostile requests get 4xx problems and move no money.

    a) test_parser_raises_only_typed_errors   one hypothesis sweep per parser: arbitrary
       text/bytes, and structure-aware mutations of valid inputs (bit flips, truncations,
       extensions, slices; repaired check digits, CRCs and base64 so they reach the deeper layers)
    b) test_openapi_fuzzing_never_5xx          schemathesis, from /v1/openapi.json of a live
       server: each operation unauthenticated, and signed with a real terminal key, a real
       device key or a real session token so the bodies reach the charge and refund logic
    c) test_hostile_http_requests              raw sockets: oversized and lying bodies, deep
       nesting, huge numbers, NaN, duplicate keys, bad UTF-8, wrong media types, chunked
       bodies, absurd headers, paths and query strings; the ledger is compared before and after

SHORT runs b) and c) against `paycode-server serve` (gunicorn, as production) on SQLite; FULL
adds gunicorn on PostgreSQL for both, and the development server (`paycode-server run`) on
SQLite for c).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import math
import random
import re
import socket
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from sqlalchemy import text

from paycode.appkit import http_client as client_api
from paycode.client import online
from paycode.client.wallet import Wallet
from paycode.merchant_pos.identify import describe
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.shared import terminal_auth, wallet_auth
from paycode.shared.checkdigit import damm_digit
from paycode.shared.codes import HTTP_STATUS
from paycode.shared.emv.collection import CollectionCode, build_collection_payload, read_collection
from paycode.shared.emv.cpm import decode_cpm, encode_cpm
from paycode.shared.emv.mpm import crc16_ccitt_false, decode_mpm
from paycode.shared.emv.tlv import decode_tlv, encode_tlv
from paycode.shared.enrollment import build_grant, new_ed25519_seed, read_grant
from paycode.shared.errors import (
    AmountInvalid,
    CodeMalformed,
    EmvFormatError,
    EnrollmentInvalid,
)
from paycode.shared.money import MAX_AMOUNT_MINOR, Money, format_amount, parse_amount
from paycode.shared.verify import verify_code
from paycode.shared.versions.base import Accepted, DeviceCredential, Rejected
from paycode.shared.versions.registry import by_name
from tests.reliability.code_world import VERSIONS, build_world, genuine_codes
from tests.reliability.figures import Figures, Scale
from tests.support import shop
from tests.support.protocol import CodeServer
from tests.support.servers import LiveServer, postgres_database, start_server

SECTION = "5. Hostile input"
REPO_ROOT = Path(__file__).resolve().parents[2]
SPECIALS = (
    "\x00", "\ud800", "\udfff", "\ufeff", "\u202e", "\u0660", "\uff10", "\n", "\r\n", "\t", " ",
    "=", "%", "\\", '"', "'", "{", "[", "\x7f", "\x80", "\xff", "\u00e9", "\U0001f600", "6304",
)  # fmt: skip
"""Characters and fragments parsers get wrong: NUL, lone surrogates, BOM, RTL override, Arabic
and full-width digits, line breaks, quoting, the MPM CRC header."""
HOSTILE_JSON_NUMBERS = (
    "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 400, "9" * 5000, "-0",
    "1.7e9", "0.1e-400", "1E+2",
)  # fmt: skip
"""Numbers Python's json reads into a float it cannot hold, an int no float holds, or refuses
(more than 4300 digits: a plain ValueError, not JSONDecodeError)."""


# == a) every parser, in process ================================================================


def hostile_text(max_size: int) -> st.SearchStrategy[str]:
    """Any code point (lone surrogates included), SPECIALS, and bytes read as UTF-8 (with
    escaped surrogates) or as Latin-1."""
    pieces = st.one_of(st.characters(exclude_categories=()), st.sampled_from(SPECIALS))
    return st.one_of(
        st.lists(pieces, max_size=max_size).map("".join),
        st.binary(max_size=max_size).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
        st.binary(max_size=max_size).map(lambda raw: raw.decode("latin-1")),
    )


def mutate_text(text: str, rng: random.Random, alphabet: str) -> str:
    """1-4 random edits: substitute, flip a bit, truncate, extend, delete, duplicate, insert a
    special, swap, or double the whole."""
    for _ in range(rng.randint(1, 4)):
        size, at = len(text), rng.randrange(len(text) + 1)
        edit = rng.randrange(9)
        if edit == 0 and size:
            text = text[: at % size] + rng.choice(alphabet) + text[at % size + 1 :]
        elif edit == 1 and size:
            char = chr(ord(text[at % size]) ^ (1 << rng.randrange(8)))
            text = text[: at % size] + char + text[at % size + 1 :]
        elif edit == 2:
            text = text[:at]
        elif edit == 3:
            text += "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 64)))
        elif edit == 4:
            text = text[:at] + text[at + rng.randint(1, 8) :]
        elif edit == 5:
            start = rng.randrange(size + 1)
            text = text[:at] + text[start : start + rng.randint(1, 32)] + text[at:]
        elif edit == 6:
            text = text[:at] + rng.choice(SPECIALS) + text[at:]
        elif edit == 7 and size > 1:
            i, j = sorted(rng.sample(range(size), 2))
            text = text[:i] + text[j] + text[i + 1 : j] + text[i] + text[j + 1 :]
        elif edit == 8:
            text = text * 2
    return text


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """1-4 random edits of bytes: bit flips, byte values, truncation, extension, slices."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        size, at = len(buffer), rng.randrange(len(buffer) + 1)
        edit = rng.randrange(6)
        if edit == 0 and size:
            buffer[at % size] ^= 1 << rng.randrange(8)
        elif edit == 1 and size:
            buffer[at % size] = rng.choice((0x00, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0xFF))
        elif edit == 2:
            del buffer[at:]
        elif edit == 3:
            buffer[at:at] = rng.randbytes(rng.randint(1, 64))
        elif edit == 4:
            del buffer[at : at + rng.randint(1, 8)]
        else:
            start = rng.randrange(size + 1)
            buffer[at:at] = buffer[start : start + rng.randint(1, 32)]
    return bytes(buffer)


def mutated(
    seeds: Sequence[str],
    alphabet: str,
    repair: Callable[[str, random.Random], str] | None = None,
) -> st.SearchStrategy[str]:
    """A seed, edited; then, half the time, repaired (check digit, CRC, base64) so the edit
    passes the outer layer and reaches the structure behind it."""

    def build(seed: str, draw: int) -> str:
        rng = random.Random(draw)
        text = mutate_text(seed, rng, alphabet)
        return repair(text, rng) if repair is not None and rng.random() < 0.5 else text

    return st.builds(build, st.sampled_from(list(seeds)), st.integers(0, 2**63))


def mutated_base64(seeds: Sequence[str]) -> st.SearchStrategy[str]:
    """Edits of the decoded bytes of base64 seeds, encoded again: they pass base64."""

    def build(seed: str, draw: int) -> str:
        rng = random.Random(draw)
        return base64.b64encode(mutate_bytes(base64.b64decode(seed), rng)).decode()

    return st.builds(build, st.sampled_from(list(seeds)), st.integers(0, 2**63))


def repair_damm(text: str, _rng: random.Random) -> str:
    return (
        text[:23] + damm_digit(text[:23]) if text[:23].isascii() and text[:23].isdigit() else text
    )


def repair_crc(text: str, _rng: random.Random) -> str:
    """Put a correct CRC object last: drop a trailing one if it is there, append a new one."""
    if len(text) >= 8 and text[-8:-4] == "6304":
        text = text[:-8]
    unsigned = text + "6304"
    try:
        return unsigned + f"{crc16_ccitt_false(unsigned.encode('utf-8')):04X}"
    except UnicodeEncodeError:
        return text


@dataclass(frozen=True)
class Parser:
    """One entry point for external input. `call` returns normally or raises one of `typed`;
    `check` names what is wrong with a returned result (None: nothing)."""

    name: str
    call: Callable[[Any], object]
    typed: tuple[type[BaseException], ...]
    inputs: st.SearchStrategy[Any]
    check: Callable[[Any, object], str | None] = lambda _value, _result: None


@dataclass
class Sweep:
    examples: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


def code_parsers(world: CodeServer, rng: random.Random) -> list[Parser]:
    ctx = world.context()
    genuine = {version: genuine_codes(world, version, rng, 12) for version in VERSIONS}
    every = {code for codes in genuine.values() for code in codes}

    def verify(text: str) -> object:
        return verify_code(text, ctx)

    def verdict(text: str, result: object) -> str | None:
        if not isinstance(result, Accepted | Rejected):
            return f"returned {type(result).__name__}"
        proved = isinstance(result, Accepted) or result.device is not None
        return f"accepted {text!r}" if proved and text not in every else None

    prefixes = st.sampled_from([by_name(v).prefix for v in VERSIONS])
    v1 = "0123456789"
    v2 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    v3 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
    return [
        Parser(
            "verify_code: any text",
            verify,
            (CodeMalformed,),
            st.one_of(hostile_text(600), st.builds(str.__add__, prefixes, hostile_text(300))),
            verdict,
        ),
        Parser(
            "verify_code: v1 mutations",
            verify,
            (CodeMalformed,),
            mutated(genuine["v1"], v1, repair_damm),
            verdict,
        ),
        Parser(
            "verify_code: v2 mutations",
            verify,
            (CodeMalformed,),
            mutated(genuine["v2"], v2),
            verdict,
        ),
        Parser(
            "verify_code: v3 mutations",
            verify,
            (CodeMalformed,),
            st.one_of(mutated(genuine["v3"], v3), mutated_base64(genuine["v3"])),
            verdict,
        ),
    ]


def emv_parsers() -> list[Parser]:
    world = build_world(random.Random(5), filler=0)
    v3_codes = genuine_codes(world, "v3", random.Random(6), 4)
    cpm_seeds = [
        *v3_codes,
        "hQVDUFYwMWEaTwegAAAAVVVVVw8SNFZ4kBI0WNGRIgESNF8=",  # the EMVCo spec's examples
        "hQVDUFYwMWETTwegAAAAVVVVUAhQcm9kdWN0MWETTwegAAAAZmZmUAhQcm9kdWN0MmJJWggSNFZ4kBI0WF8gDkNB"
        "UkRIT0xERVIvRU1WXy0IcnVlc2RlZW5kIZ8QBwYBCgMAAACfJghYT9OF+iNLzJ82AgABnzcEbVjvEw==",
        encode_cpm(
            [encode_tlv(0x4F, b"\xa0\x00\x00\x00\x04\x10\x10") + encode_tlv(0x5A, b"\x12\x34\x5f")]
        ),
    ]
    tlv_seeds = [base64.b64decode(code) for code in cpm_seeds]
    vectors = json.loads((REPO_ROOT / "tests" / "vectors" / "mpm_payloads.json").read_text())
    collections = [
        build_collection_payload(
            CollectionCode("mer_0123456789abcdef", "Alice Cafe", "Shanghai", "CNY")
        ),
        build_collection_payload(
            CollectionCode(
                "mer_0123456789abcdef",
                "Alice Cafe",
                "Shanghai",
                "CNY",
                terminal_id="term_01",
                amount="12.50",
                reference="order-7",
            )
        ),
        build_collection_payload(CollectionCode("mer_x", "B", "C", "JPY", amount="300")),
    ]
    mpm_seeds = [vector["payload"] for vector in vectors["valid"]] + collections
    mpm_alphabet = "0123456789ABCDEFabcdef.-/ :" + "".join(chr(c) for c in range(0x20, 0x7F))

    def tlv_round_trip(data: bytes, items: object) -> str | None:
        assert isinstance(items, tuple)
        again = b"".join(encode_tlv(item.tag, item.value) for item in items)
        return None if again == data else "decoded tree does not re-encode to its bytes"

    def is_description(_text: str, result: object) -> str | None:
        return None if isinstance(result, dict) and "kind" in result else f"described as {result!r}"

    return [
        Parser(
            "decode_tlv",
            decode_tlv,
            (EmvFormatError,),
            st.one_of(
                st.binary(max_size=400),
                st.builds(
                    lambda seed, draw: mutate_bytes(seed, random.Random(draw)),
                    st.sampled_from(tlv_seeds),
                    st.integers(0, 2**63),
                ),
            ),
            tlv_round_trip,
        ),
        Parser(
            "decode_cpm",
            decode_cpm,
            (EmvFormatError,),
            st.one_of(
                hostile_text(400), mutated(cpm_seeds, mpm_alphabet), mutated_base64(cpm_seeds)
            ),
        ),
        Parser(
            "decode_mpm",
            decode_mpm,
            (EmvFormatError,),
            st.one_of(
                hostile_text(600),
                st.builds(str.__add__, st.just("000201"), hostile_text(200)).map(
                    lambda text: repair_crc(text, random.Random(0))
                ),
                mutated(mpm_seeds, mpm_alphabet, repair_crc),
            ),
        ),
        Parser(
            "read_collection",
            read_collection,
            (CodeMalformed,),
            st.one_of(
                hostile_text(300), mutated(collections + mpm_seeds[:4], mpm_alphabet, repair_crc)
            ),
        ),
        Parser(
            "paycode.merchant_pos.identify.describe",
            describe,
            (),
            st.one_of(
                hostile_text(600),
                mutated(mpm_seeds + cpm_seeds, mpm_alphabet, repair_crc),
                mutated_base64(v3_codes),
            ),
            is_description,
        ),
    ]


def money_parsers() -> list[Parser]:
    amounts = ["12.50", "0.01", "1", "100", "9999999999999999.99", "0", "1.234", "007.5"]
    currencies = st.one_of(
        st.sampled_from(["CNY", "JPY", "USD", "EUR", "KWD", "BHD", "cny", "156", "XXX", ""]),
        hostile_text(6),
    )

    def parse(args: tuple[str, str]) -> object:
        return parse_amount(*args)

    def sane(_args: tuple[str, str], money: object) -> str | None:
        if not isinstance(money, Money) or not 0 < money.amount_minor <= MAX_AMOUNT_MINOR:
            return f"parsed to {money!r}"
        again = parse_amount(format_amount(money), money.currency)
        return None if again == money else f"{money!r} does not round-trip"

    texts = st.one_of(hostile_text(40), mutated(amounts, "0123456789.,-+eE "))
    return [Parser("parse_amount", parse, (AmountInvalid,), st.tuples(texts, currencies), sane)]


def signature_parsers(rng: random.Random) -> list[Parser]:
    secret = rng.randbytes(32)
    body = b'{"code": "87", "amount": "1.00", "currency": "CNY"}'
    genuine = ("POST", "/v1/charges", body, 1_796_000_000, "a" * 32)
    signed = terminal_auth.sign_headers("k", secret, *genuine[:3], timestamp_s=genuine[3])
    signed_nonce, signature = signed["Paycode-Nonce"], signed["Paycode-Signature"]
    genuine = (*genuine[:4], signed_nonce)

    def terminal_call(args: tuple[str, str, bytes, int, str, str]) -> object:
        method, path, data, timestamp_s, nonce, sig = args
        return terminal_auth.signature_valid(
            secret, method, path, data, timestamp_s=timestamp_s, nonce=nonce, signature_b64=sig
        )

    def terminal_verdict(args: tuple[str, str, bytes, int, str, str], result: object) -> str | None:
        if not isinstance(result, bool):
            return f"returned {result!r}"
        same = (args[0].upper(), *args[1:5]) == genuine and _b64(args[5]) == _b64(signature)
        return f"accepted a changed request {args!r}" if result and not same else None

    def terminal_inputs(draw: int) -> tuple[str, str, bytes, int, str, str]:
        pick = random.Random(draw)
        fields: list[Any] = [*genuine, signature]
        for index in pick.sample(range(6), pick.randint(1, 3)):
            value = fields[index]
            if isinstance(value, bytes):
                fields[index] = mutate_bytes(value, pick)
            elif isinstance(value, int):
                fields[index] = value + pick.choice((-1, 1, 2**31, -(2**40), 10**20))
            else:
                fields[index] = mutate_text(value, pick, "ABCDEFabcdef0123456789+/=?&%")
        return (fields[0], fields[1], fields[2], fields[3], fields[4], fields[5])

    arbitrary = st.tuples(
        hostile_text(10),
        hostile_text(60),
        st.binary(max_size=80),
        st.integers(),
        hostile_text(70),
        hostile_text(100),
    )
    seed, public = new_ed25519_seed(rng.randbytes)
    hmac_key = rng.randbytes(32)
    credentials = {
        "v2": (DeviceCredential("v2", b"h" * 8, hmac_key, hiding_key=b"x" * 32), hmac_key),
        "v3": (DeviceCredential("v3", b"h" * 8, seed), public),
    }
    message = wallet_auth.signing_message("GET", "/v1/wallet/balance", 1_796_000_000, "n" * 32, b"")
    wallet_genuine = {
        version: (version, key, message, wallet_auth.sign(credential, message))
        for version, (credential, key) in credentials.items()
    }

    def wallet_call(args: tuple[str, bytes, bytes, str]) -> object:
        return wallet_auth.signature_valid(*args)

    def wallet_verdict(args: tuple[str, bytes, bytes, str], result: object) -> str | None:
        if not isinstance(result, bool):
            return f"returned {result!r}"
        scheme = "v3" if args[0] == "v3" else "v2"
        _, key, signed_message, sig = wallet_genuine[scheme]
        same = (key, signed_message) == args[1:3] and _b64(args[3]) == _b64(sig)
        return f"accepted a changed wallet request {args!r}" if result and not same else None

    def wallet_inputs(version: str, draw: int) -> tuple[str, bytes, bytes, str]:
        pick = random.Random(draw)
        fields: list[Any] = list(wallet_genuine[version])
        for index in pick.sample(range(4), pick.randint(1, 2)):
            value = fields[index]
            if isinstance(value, bytes):
                fields[index] = mutate_bytes(value, pick)
            else:
                fields[index] = mutate_text(value, pick, "ABCDEFabcdef0123456789+/=v")
        return (fields[0], fields[1], fields[2], fields[3])

    return [
        Parser(
            "terminal_auth.signature_valid",
            terminal_call,
            (),
            st.one_of(arbitrary, st.builds(terminal_inputs, st.integers(0, 2**63))),
            terminal_verdict,
        ),
        Parser(
            "wallet_auth.signature_valid",
            wallet_call,
            (),
            st.one_of(
                st.tuples(
                    st.sampled_from(["v1", "v2", "v3", ""]),
                    st.binary(max_size=40),
                    st.binary(max_size=80),
                    hostile_text(100),
                ),
                st.builds(wallet_inputs, st.sampled_from(["v2", "v3"]), st.integers(0, 2**63)),
            ),
            wallet_verdict,
        ),
    ]


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return None


def json_values() -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=10**300, max_value=10**400),
        st.floats(),
        hostile_text(40),
    )
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(hostile_text(8), inner, max_size=3)
        ),
        max_leaves=8,
    )


def enrollment_parsers(rng: random.Random) -> list[Parser]:
    seed, public = new_ed25519_seed(rng.randbytes)
    grants = [
        build_grant(
            version=version,
            device_id=f"dev_{version}",
            handle=by_name(version).new_handle(rng.randbytes),
            server_time_s=1_796_000_000.5,
            device_key=b"" if version == "v3" else rng.randbytes(32),
            hiding_key=b"" if version == "v3" else rng.randbytes(32),
            seal_public_key=public if version == "v3" else b"",
        )
        for version in VERSIONS
    ]
    names = sorted({name for grant in grants for name in grant})

    def grant_inputs(draw: int, values: list[Any]) -> tuple[dict[str, Any], bytes]:
        pick = random.Random(draw)
        grant = dict(pick.choice(grants))
        for value in values:
            name = pick.choice([*names, "extra"])
            action = pick.randrange(3)
            if action == 0:
                grant.pop(name, None)
            elif action == 1 or not isinstance(grant.get(name), str):
                grant[name] = value
            else:
                grant[name] = mutate_text(grant[name], pick, "0123456789abcdefABCDEF+/=v")
        own_seed = seed if pick.random() < 0.8 else pick.randbytes(pick.choice((0, 31, 32, 33)))
        return grant, own_seed

    def call(args: tuple[dict[str, Any], bytes]) -> object:
        return read_grant(args[0], ed25519_seed=args[1])

    def sane(args: tuple[dict[str, Any], bytes], result: object) -> str | None:
        credential, info = result  # type: ignore[misc]
        codec = by_name(info.version)
        problems = [
            len(credential.handle) != codec.handle_bytes,
            not math.isfinite(info.server_time_s),
            not 0 <= info.counter_max <= codec.counter_max,
            credential.version != args[0].get("version"),
        ]
        return f"read an inconsistent grant {args[0]!r}" if any(problems) else None

    return [
        Parser(
            "enrollment.read_grant",
            call,
            (EnrollmentInvalid,),
            st.one_of(
                st.tuples(
                    st.dictionaries(hostile_text(20), json_values(), max_size=8),
                    st.binary(max_size=40),
                ),
                st.builds(
                    grant_inputs,
                    st.integers(0, 2**63),
                    st.lists(json_values(), min_size=1, max_size=3),
                ),
            ),
            sane,
        )
    ]


def client_response_parsers() -> list[Parser]:
    """What a wallet or a till reads from a (hostile, or broken) server: the body, its
    server_time (the clock) and the re-enroll advice (paycode.appkit.http_client and
    paycode.client.online)."""
    replies = [
        json.dumps({"balance": "12.50", "currency": "CNY", "server_time": 1_796_000_000.25}),
        json.dumps({"reenroll": {"version": "v3", "reason": "v1 retires"}, "server_time": 1}),
        json.dumps({"type": "x", "code": "unauthorized", "status": 401, "server_time": 1.5e9}),
    ]
    literal = st.builds(
        lambda number, where: (
            f'{{"server_time": {number}}}' if where else f'{{"reenroll": {{"version": {number}}}}}'
        ),
        st.sampled_from(HOSTILE_JSON_NUMBERS),
        st.booleans(),
    )
    nested = st.builds(
        lambda depth, opener: opener * depth,
        st.integers(1, 200_000),
        st.sampled_from(["[", '{"a":']),
    )
    raw = st.one_of(
        st.binary(max_size=300),
        st.one_of(literal, nested, mutated(replies, '0123456789{}[]":,.eE-NaIfinty ')).map(
            lambda text: text.encode("utf-8", "surrogatepass")
        ),
    )
    dates = st.one_of(
        st.none(),
        hostile_text(40),
        mutated(
            ["Thu, 03 Dec 2026 18:03:43 GMT", "Mon, 01 Jan 9999 00:00:00 GMT"], "0123456789 :,A-Z+-"
        ),
    )

    def call(args: tuple[bytes, str | None]) -> object:
        body = client_api._json_body(args[0])
        offset = client_api._clock_offset(body, args[1], 1_796_000_000.0)
        online.reenroll_of(body)
        return offset

    def sane(_args: tuple[bytes, str | None], offset: object) -> str | None:
        ok = offset is None or (isinstance(offset, float) and math.isfinite(offset))
        return None if ok else f"learned a clock offset of {offset!r}"

    return [
        Parser(
            "client response (body, server_time, Date, reenroll)",
            call,
            (),
            st.tuples(raw, dates),
            sane,
        )
    ]


def run_sweep(parser: Parser, examples: int, seed: int, figures: Figures, sweep: Sweep) -> None:
    @hypothesis.seed(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(parser.inputs)
    def run(value: Any) -> None:
        sweep.examples[parser.name] += 1
        try:
            result = parser.call(value)
        except parser.typed:
            sweep.refused[parser.name] += 1
            return
        except Exception as error:  # any other exception is the finding: recorded, not raised
            sweep.errors[f"{parser.name}: {type(error).__name__}"] += 1
            figures.anomaly(
                f"{parser.name}: {type(error).__name__}: {error!s:.80} on {value!r:.120}"
            )
            return
        problem = parser.check(value, result)
        if problem:
            figures.anomaly(f"{parser.name}: {problem:.200}")

    run()


PARSER_IDS = {
    "verify-any-text": "verify_code: any text",
    "verify-v1": "verify_code: v1 mutations",
    "verify-v2": "verify_code: v2 mutations",
    "verify-v3": "verify_code: v3 mutations",
    "tlv": "decode_tlv",
    "cpm": "decode_cpm",
    "mpm": "decode_mpm",
    "collection": "read_collection",
    "inspect": "paycode.merchant_pos.identify.describe",
    "amount": "parse_amount",
    "terminal-signature": "terminal_auth.signature_valid",
    "wallet-signature": "wallet_auth.signature_valid",
    "grant": "enrollment.read_grant",
    "client-reply": "client response (body, server_time, Date, reenroll)",
}
"""Test id -> parser: one test (and one record) per parser, each a few minutes at most in FULL."""


def all_parsers(rng: random.Random, world: CodeServer) -> dict[str, Parser]:
    parsers = [
        *code_parsers(world, rng),
        *emv_parsers(),
        *money_parsers(),
        *signature_parsers(rng),
        *enrollment_parsers(rng),
        *client_response_parsers(),
    ]
    by_name = {parser.name: parser for parser in parsers}
    assert sorted(by_name) == sorted(PARSER_IDS.values()), "PARSER_IDS lists every parser"
    return by_name


@pytest.mark.parametrize("parser_id", list(PARSER_IDS))
def test_parser_raises_only_typed_errors(
    parser_id: str, figures: Figures, seed: int, scale: Scale
) -> None:
    figures.section, figures.seed = SECTION, seed
    rng = random.Random(seed)
    world = build_world(rng, filler=scale.pick(short=50, full=2_000))
    parser = all_parsers(rng, world)[PARSER_IDS[parser_id]]
    sweep = Sweep()
    run_sweep(parser, scale.pick(short=100, full=20_000), seed, figures, sweep)
    figures.runs = 1
    figures.operations = figures.faults = sweep.examples[parser.name]
    figures.details = {
        "parser": parser.name,
        "inputs": sweep.examples[parser.name],
        "refused with a typed error": sweep.refused[parser.name],
        "typed errors allowed": ", ".join(t.__name__ for t in parser.typed)
        or "none (never raises)",
        **({"untyped exceptions": dict(sweep.errors)} if sweep.errors else {}),
    }
    assert figures.anomalies == 0, figures.anomaly_notes


# == live targets shared by b) and c) ===========================================================

GUARD_OFF = {
    "PAYCODE_GUESS_TERMINAL_MAX": "1000000",
    "PAYCODE_GUESS_MERCHANT_MAX": "1000000",
    "PAYCODE_GUESS_IP_MAX": "1000000",
    "PAYCODE_GUESS_DEVICE_MAX": "1000000",
}
"""The fuzzer's bad codes must keep reaching the charge logic rather than the guard's 429
(which section 6 tests)."""


@dataclass
class Target:
    """A live server with a funded customer (wallet enrolled in v3), a terminal, a payment."""

    name: str
    server: LiveServer
    wallet: Wallet
    till: TerminalClient
    payment_id: str
    user: str


@contextlib.contextmanager
def live_target(name: str, home: Path) -> Iterator[Target]:
    backend, mode = name.split("-")
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            server = stack.enter_context(start_server("sqlite", mode=mode, extra_env=GUARD_OFF))
        else:
            url = stack.enter_context(postgres_database(migrated=True))
            server = stack.enter_context(
                start_server("postgres", database_url=url, mode=mode, extra_env=GUARD_OFF)
            )
        user = shop.new_user(server, "hostile", top_up="100000.00")
        wallet = shop.new_phone(server, home / name, user, ["v3"])
        till = shop.new_till(server)
        paid = shop.charge(till, shop.code_of(wallet, "v3"), "5.00")
        yield Target(name, server, wallet, till, str(paid["payment_id"]), user)


@pytest.fixture(scope="module")
def targets(scale: Scale, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Target]]:
    names = scale.pick(
        short=["sqlite-serve"], full=["sqlite-serve", "sqlite-run", "postgres-serve"]
    )
    home = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.ExitStack() as stack:
        shop.use_fast_keystore(monkeypatch)
        yield [stack.enter_context(live_target(name, home)) for name in names]


def problem_anomaly(status: int, content_type: str, raw: bytes) -> str | None:
    """What is wrong with an answer: 5xx, a traceback, or an error that is not a problem+json
    with a stable code and its own status. None: nothing."""
    if status >= 500:
        return f"{status}: {raw[:160]!r}"
    if b"Traceback" in raw:
        return f"{status} carries a traceback"
    if status < 400:
        return None
    if content_type.split(";", 1)[0].strip() != "application/problem+json":
        return f"{status} as {content_type!r}: {raw[:120]!r}"
    try:
        body = json.loads(raw)
    except ValueError:
        return f"{status} problem is not JSON: {raw[:120]!r}"
    if not isinstance(body, dict) or body.get("code") not in HTTP_STATUS:
        return f"{status} problem without a stable code: {raw[:160]!r}"
    if body.get("status") != status:
        return f"{status} problem says status {body.get('status')!r}"
    return None


# == b) schemathesis against the served OpenAPI document ========================================


class Signer(requests.auth.AuthBase):
    """Sign the request exactly as it goes out: method, percent-decoded path with the raw
    query, the body bytes (docs/api.md, the terminal and wallet signing schemes)."""

    def __init__(self, sign: Callable[[str, str, bytes], dict[str, str]]) -> None:
        self.sign = sign

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
            request.body = body
            request.headers["Content-Length"] = str(len(body))
        assert isinstance(body, bytes), type(body)
        split = urllib.parse.urlsplit(request.url or "")
        path = urllib.parse.unquote(split.path) + (f"?{split.query}" if split.query else "")
        request.headers.update(self.sign(request.method or "GET", path, body))
        return request


class BearerToken(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def authenticators(target: Target) -> dict[str, requests.auth.AuthBase]:
    till, enrollment = target.till, target.wallet.enrollment("v3")

    def terminal(method: str, path: str, body: bytes) -> dict[str, str]:
        return terminal_auth.sign_headers(
            till.key_id, till.secret, method, path, body, timestamp_s=int(time.time())
        )

    def device(method: str, path: str, body: bytes) -> dict[str, str]:
        timestamp_s, nonce = int(time.time()), uuid.uuid4().hex
        message = wallet_auth.signing_message(method, path, timestamp_s, nonce, body)
        signature = wallet_auth.sign(enrollment.credential, message)
        return wallet_auth.SignedHeaders(
            enrollment.device_id, timestamp_s, nonce, signature
        ).as_dict()

    login = requests.post(
        f"{target.server.url}/v1/wallet/sessions",
        json={"user": target.user, "password": shop.PASSWORD},
        timeout=30,
    )
    assert login.status_code == 201, login.text
    return {
        "terminalSignature": Signer(terminal),
        "deviceSignature": Signer(device),
        "bearerSession": BearerToken(login.json()["token"]),
    }


def fuzz_openapi(target: Target, examples: int, seed: int, figures: Figures) -> dict[str, object]:
    url = target.server.url
    schema = schemathesis.openapi.from_url(f"{url}/v1/openapi.json")
    auths = authenticators(target)
    tweak = random.Random(seed)
    http = requests.Session()
    statuses: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    operations = 0

    def send(case: schemathesis.Case, auth: requests.auth.AuthBase | None) -> None:
        if auth is not None:
            aim_at_real_objects(case, target, tweak)
        try:
            kwargs = case.as_transport_kwargs(base_url=url)
        except Exception as error:  # schemathesis could not serialize what it generated
            skipped[type(error).__name__] += 1
            return
        kwargs.pop("auth", None)
        try:
            answer = http.request(**kwargs, auth=auth, timeout=60, allow_redirects=False)
        except (
            requests.exceptions.InvalidHeader,
            requests.exceptions.InvalidURL,
            ValueError,
        ) as error:
            skipped[type(error).__name__] += 1  # requests refused to send it
            return
        except requests.exceptions.ConnectionError as error:
            figures.anomaly(
                f"{target.name} {case.operation.label}: connection failed: {error!s:.120}"
            )
            return
        figures.operations += 1
        statuses[str(answer.status_code)] += 1
        found = problem_anomaly(
            answer.status_code, answer.headers.get("Content-Type", ""), answer.content
        )
        if found:
            figures.anomaly(f"{target.name} {case.operation.label}: {found}")

    for result in schema.get_all_operations():
        operation = result.ok()
        schemes = [name for entry in operation.definition.raw.get("security", []) for name in entry]
        flavours: list[requests.auth.AuthBase | None] = [None, *(auths[name] for name in schemes)]
        cases = st.one_of(
            operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE),
        )
        operations += 1

        run = hypothesis.seed(seed + operations)(
            settings(
                max_examples=examples,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )(fuzz_one(cases, flavours, send))
        )
        try:
            run()
        except Unsatisfiable:
            skipped[f"no case for {operation.label}"] += 1
    figures.runs += operations
    return {
        "operations": operations,
        "answers": dict(sorted(statuses.items())),
        "not sent": dict(skipped),
    }


def fuzz_one(
    cases: st.SearchStrategy[schemathesis.Case],
    flavours: list[requests.auth.AuthBase | None],
    send: Callable[[schemathesis.Case, requests.auth.AuthBase | None], None],
) -> Callable[[], None]:
    @given(case=cases)
    def run(case: schemathesis.Case) -> None:
        for auth in flavours:  # as generated first; then signed, aimed at real objects
            send(case, auth)

    return run


def aim_at_real_objects(case: schemathesis.Case, target: Target, rng: random.Random) -> None:
    """Signed cases reach further with a real payment id or a genuine code now and then."""
    if case.path_parameters and "payment_id" in case.path_parameters and rng.random() < 0.5:
        case.path_parameters["payment_id"] = target.payment_id
    if case.operation.path == "/v1/charges" and isinstance(case.body, dict) and rng.random() < 0.4:
        case.body["code"] = shop.code_of(target.wallet, "v3")


def test_openapi_fuzzing_never_5xx(
    targets: list[Target], figures: Figures, seed: int, scale: Scale
) -> None:
    figures.section, figures.seed = SECTION, seed
    figures.details["schemathesis"] = schemathesis.__version__
    examples = scale.pick(short=3, full=60)
    figures.details["examples per operation (each sent as generated and signed)"] = examples
    for target in targets:
        if target.name == "sqlite-run":
            continue  # the development server: the hand-made cases below cover it
        figures.details[target.name] = fuzz_openapi(target, examples, seed, figures)
    assert figures.anomalies == 0, figures.anomaly_notes


# == c) hand-made hostile requests over raw sockets =============================================

BODY_BYTES_MAX = 64 * 1024
"""ServerConfig.body_bytes_max, the server's MAX_CONTENT_LENGTH."""
READ_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Reply:
    status: int | None
    """None: the connection closed (or reset) without an answer."""
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Hostile:
    """One raw request. `http_layer`: an absurd request the HTTP server itself may refuse (its
    own 4xx page, or closing the connection) before the application sees it."""

    name: str
    request: Callable[[Target], bytes]
    http_layer: bool = False
    half_close: bool = False
    closed_ok: bool = False
    """The server answers before reading the whole body (413, a short Content-Length) and
    closes with bytes unread: the kernel then resets the connection, which can drop the
    answer before we read it (no lingering close). Tried three times, then accepted."""
    statuses: tuple[int, ...] = ()
    """When given, the application's answer must be one of these."""


def raw_request(
    method: str,
    path: str,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    content_length: str | None = None,
    chunked: bytes | None = None,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if chunked is not None:
        lines.append("Transfer-Encoding: chunked")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + chunked
    lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def terminal_headers(
    target: Target,
    method: str,
    path: str,
    signed_body: bytes,
    content_type: str | None = "application/json",
) -> dict[str, str]:
    headers = terminal_auth.sign_headers(
        target.till.key_id,
        target.till.secret,
        method,
        path,
        signed_body,
        timestamp_s=int(time.time()),
    )
    headers["Idempotency-Key"] = uuid.uuid4().hex
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


def charge(
    body: bytes,
    *,
    content_type: str | None = "application/json",
    content_length: str | None = None,
    headers: dict[str, str] | None = None,
) -> Callable[[Target], bytes]:
    """A signed POST /v1/charges (the signature covers `body`, so it reaches the parser)."""

    def build(target: Target) -> bytes:
        signed = terminal_headers(target, "POST", "/v1/charges", body, content_type)
        return raw_request(
            "POST",
            "/v1/charges",
            body,
            headers=signed | (headers or {}),
            content_length=content_length,
        )

    return build


def charge_with_genuine(template: str) -> Callable[[Target], bytes]:
    """A signed charge whose body holds a genuine, unused code: only the hostile part stands
    between it and a payment."""

    def build(target: Target) -> bytes:
        body = template.replace("GENUINE", shop.code_of(target.wallet, "v3")).encode()
        return charge(body)(target)

    return build


def login(body: bytes, content_type: str = "application/json") -> Callable[[Target], bytes]:
    def build(_target: Target) -> bytes:
        return raw_request(
            "POST", "/v1/wallet/sessions", body, headers={"Content-Type": content_type}
        )

    return build


def chunks(data: bytes, size: int = 8000, *, terminator: bytes = b"0\r\n\r\n") -> bytes:
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + terminator


def chunked_charge(body: bytes, wire: bytes | None = None) -> Callable[[Target], bytes]:
    def build(target: Target) -> bytes:
        headers = terminal_headers(target, "POST", "/v1/charges", body)
        return raw_request(
            "POST", "/v1/charges", headers=headers, chunked=chunks(body) if wire is None else wire
        )

    return build


def signed_get(path: str) -> Callable[[Target], bytes]:
    def build(target: Target) -> bytes:
        signed = terminal_headers(target, "GET", urllib.parse.unquote(path), b"", None)
        return raw_request("GET", path, headers=signed)

    return build


def plain(
    method: str, path: str, headers: dict[str, str] | None = None
) -> Callable[[Target], bytes]:
    def build(_target: Target) -> bytes:
        return raw_request(method, path, headers=headers)

    return build


def lying_short(target: Target) -> bytes:
    """Content-Length says 10 while 60 bytes follow: the server reads (and we sign) 10."""
    body = b'{"code": "x", "amount": "1.00", "currency": "CNY"}'
    headers = terminal_headers(target, "POST", "/v1/charges", body[:10])
    return raw_request("POST", "/v1/charges", body, headers=headers, content_length="10")


def lying_long(target: Target) -> bytes:
    """Content-Length says 1000, 30 bytes come, then the client stops sending."""
    body = b'{"code": "x", "amount": "1.00"'
    return raw_request(
        "POST",
        "/v1/charges",
        body,
        headers=terminal_headers(target, "POST", "/v1/charges", body),
        content_length="1000",
    )


def two_lengths(target: Target) -> bytes:
    body = b'{"code": "x", "amount": "1.00", "currency": "CNY"}'
    headers = terminal_headers(target, "POST", "/v1/charges", body) | {"Content-Length": "7"}
    return raw_request("POST", "/v1/charges", body, headers=headers)


def depth_9(_target: Target) -> bytes:
    body = b'{"user": "a", "password": "b", "x": ' + b'{"a": ' * 9 + b"1" + b"}" * 9 + b"}"
    return raw_request(
        "POST", "/v1/wallet/sessions", body, headers={"Content-Type": "application/json"}
    )


GENUINE_CHARGE = '{"code": "GENUINE", "amount": "1.00", "currency": "CNY"'
HOSTILE: tuple[Hostile, ...] = (
    # size and framing
    Hostile(
        "body over the limit",
        charge(b'{"code": "' + b"8" * 70_000 + b'"}'),
        statuses=(413,),
        closed_ok=True,
    ),
    Hostile("3 MB body", charge(b"[" * 3_000_000), statuses=(413,), closed_ok=True),
    Hostile("Content-Length of 10^12", charge(b"{}", content_length=str(10**12)), statuses=(413,)),
    Hostile("Content-Length shorter than the body", lying_short, statuses=(400,), closed_ok=True),
    Hostile("Content-Length longer than the body", lying_long, half_close=True, statuses=(400,)),
    Hostile("negative Content-Length", charge(b"{}", content_length="-1"), http_layer=True),
    Hostile("Content-Length not a number", charge(b"{}", content_length="12abc"), http_layer=True),
    Hostile("two Content-Length headers", two_lengths, http_layer=True),
    # JSON
    Hostile(
        "100k nested arrays",
        charge(b"[" * 100_000 + b"]" * 100_000),
        statuses=(413,),
        closed_ok=True,
    ),
    Hostile("30k nested arrays", charge(b"[" * 30_000 + b"]" * 30_000), statuses=(400,)),
    Hostile(
        "10k nested objects", charge(b'{"a":' * 10_000 + b"1" + b"}" * 10_000), statuses=(400,)
    ),
    Hostile("nesting one level too deep", depth_9, statuses=(400,)),
    Hostile(
        "5000-digit amount",
        charge_with_genuine(GENUINE_CHARGE.replace('"1.00"', "9" * 5000) + "}"),
        statuses=(400,),
    ),
    Hostile(
        "1e999 amount",
        charge_with_genuine(GENUINE_CHARGE.replace('"1.00"', "1e999") + "}"),
        statuses=(400,),
    ),
    Hostile(
        "NaN amount",
        charge_with_genuine(GENUINE_CHARGE.replace('"1.00"', "NaN") + "}"),
        statuses=(400,),
    ),
    Hostile(
        "Infinity code",
        charge(b'{"code": Infinity, "amount": "1.00", "currency": "CNY"}'),
        statuses=(400,),
    ),
    Hostile(
        "duplicate keys",
        charge_with_genuine(GENUINE_CHARGE + ', "amount": "0.01"}'),
        statuses=(400,),
    ),
    Hostile(
        "invalid UTF-8",
        charge(b'{"code": "\xff\xfe\xfd", "amount": "1.00", "currency": "CNY"}'),
        statuses=(400,),
    ),
    Hostile(
        "overlong UTF-8",
        charge(b'{"code": "\xc0\xaf", "amount": "1.00", "currency": "CNY"}'),
        statuses=(400,),
    ),
    Hostile(
        "UTF-8 encoded surrogate",
        charge(b'{"code": "\xed\xa0\x80", "amount": "1.00", "currency": "CNY"}'),
        statuses=(400,),
    ),
    Hostile(
        "lone surrogate in a login", login(b'{"user": "\\ud800", "password": "x"}'), statuses=(400,)
    ),
    Hostile(
        "lone surrogate in an order id",
        charge_with_genuine(GENUINE_CHARGE + ', "merchant_order_id": "\\udfff"}'),
        statuses=(400,),
    ),
    Hostile("not JSON", charge(b"code=87&amount=1.00"), statuses=(400,)),
    Hostile("XML", charge(b"<charge><code>87</code></charge>"), statuses=(400,)),
    Hostile("JSON array", charge(b'["code", "amount"]'), statuses=(400,)),
    Hostile("JSON string", charge(b'"code"'), statuses=(400,)),
    Hostile("empty body", charge(b""), statuses=(400,)),
    Hostile("NUL bytes", charge(b'{"code": "87\x00", "amount": "1.00"}'), statuses=(400,)),
    # media types
    Hostile("text/plain", charge(b"{}", content_type="text/plain"), statuses=(415,)),
    Hostile("no Content-Type", charge(b'{"code": "x"}', content_type=None), statuses=(415,)),
    Hostile(
        "form content type",
        login(b"user=a&password=b", "application/x-www-form-urlencoded"),
        statuses=(415,),
    ),
    Hostile(
        "JSON with a charset",
        login(b'{"user": "nobody", "password": "x"}', "application/json; charset=latin-1"),
        statuses=(401,),
    ),
    # chunked
    Hostile(
        "chunked JSON",
        chunked_charge(b'{"code": "x", "amount": "1.00", "currency": "CNY"}'),
        statuses=(400,),
    ),
    Hostile(
        "chunked, bad chunk size", chunked_charge(b"{}", b"zz\r\n{}\r\n0\r\n\r\n"), statuses=(400,)
    ),
    Hostile(
        "chunked, over the limit",
        chunked_charge(b" " * 100_000 + b"{}"),
        statuses=(413,),
        closed_ok=True,
    ),
    Hostile(
        "chunked and Content-Length",
        charge(b"{}", headers={"Transfer-Encoding": "chunked"}),
        http_layer=True,
    ),
    # headers, paths, query strings
    Hostile(
        "100 KB header", plain("GET", "/v1/merchant", {"X-Long": "a" * 100_000}), http_layer=True
    ),
    Hostile(
        "2000 headers",
        plain("GET", "/v1/merchant", {f"X-{i}": "a" for i in range(2000)}),
        http_layer=True,
    ),
    Hostile("100 KB path", plain("GET", "/v1/" + "a" * 100_000), http_layer=True),
    Hostile(
        "100 KB query",
        plain("GET", "/v1/payments?merchant_order_id=" + "a" * 100_000),
        http_layer=True,
    ),
    Hostile("3 KB path", plain("GET", "/v1/payments/" + "a" * 3_000), statuses=(401,)),
    Hostile(
        "8 KB signature header",
        plain(
            "GET",
            "/v1/merchant",
            {
                "Paycode-Key-Id": "k",
                "Paycode-Timestamp": "1",
                "Paycode-Nonce": "n" * 32,
                "Paycode-Signature": "A" * 8000,
            },
        ),
        http_layer=True,
    ),
    Hostile(
        "latin-1 key id",
        plain(
            "GET",
            "/v1/merchant",
            {
                "Paycode-Key-Id": "\xe9\xff",
                "Paycode-Timestamp": str(10**30),
                "Paycode-Nonce": "\x80" * 20,
                "Paycode-Signature": "==",
            },
        ),
        statuses=(401,),
    ),
    Hostile(
        "percent-encoded surrogate in a path",
        plain("GET", "/v1/payments/%ED%A0%80"),
        statuses=(401,),
    ),
    Hostile("raw bytes in a path", plain("GET", "/v1/payments/\xff\xfe"), http_layer=True),
    Hostile("unknown method", plain("BREW", "/v1/charges"), statuses=(405,)),
    # NUL: PostgreSQL refuses it in text (it was a 500 there)
    Hostile("NUL in a login", login(b'{"user": "a\\u0000b", "password": "x"}'), statuses=(400,)),
    Hostile(
        "NUL in an order id",
        charge_with_genuine(GENUINE_CHARGE + ', "merchant_order_id": "A\\u0000"}'),
        statuses=(400,),
    ),
    Hostile("NUL in a query", signed_get("/v1/payments?merchant_order_id=%00"), statuses=(400,)),
    Hostile("NUL in a path", signed_get("/v1/payments/pay_%00"), statuses=(400,)),
)


def exchange(target: Target, data: bytes, *, half_close: bool) -> Reply:
    """Send `data` (as much as the server takes), read one answer."""
    parsed = urllib.parse.urlsplit(target.server.url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=READ_TIMEOUT_S) as sock:
        with contextlib.suppress(OSError):  # a server that answered early may stop reading
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        received = b""
        with contextlib.suppress(OSError):
            while not _whole_answer(received) and (chunk := sock.recv(65536)):
                received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if not match:
        return Reply(None, "", received[:200])
    content_type = re.search(rb"(?im)^content-type:\s*([^\r\n]*)", head)
    return Reply(
        int(match.group(1)), (content_type.group(1) if content_type else b"").decode(), body
    )


def answer_of(
    target: Target, request: Callable[[Target], bytes], *, half_close: bool, attempts: int = 3
) -> Reply:
    """The first answer in `attempts` tries: see Hostile.closed_ok for why one can be lost."""
    for _ in range(attempts):
        reply = exchange(target, request(target), half_close=half_close)
        if reply.status is not None:
            break
    return reply


def _whole_answer(received: bytes) -> bool:
    """Headers and all the Content-Length promised: a server may keep the connection open
    after refusing a body (draining what we still send), and the answer is all we need."""
    head, found, body = received.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return bool(found and length and len(body) >= int(length.group(1)))


def ledger_state(server: LiveServer) -> tuple[object, ...]:
    with server.session() as session:
        balances = session.execute(text("SELECT id, balance_minor FROM accounts ORDER BY id")).all()
        counts = [
            session.scalar(text(f"SELECT count(*) FROM {table}"))
            for table in ("ledger_transactions", "ledger_entries", "payments")
        ]
    return (tuple(map(tuple, balances)), tuple(counts))


def test_hostile_http_requests(
    targets: list[Target], figures: Figures, seed: int, tmp_path: Path
) -> None:
    figures.section, figures.seed = SECTION, seed
    figures.details["cases"] = len(HOSTILE)
    for shared in targets:
        figures.runs += 1
        # A customer of its own: what the fuzzing before did to the shared one is no matter.
        user = shop.new_user(shared.server, "hostile_raw", top_up="100.00")
        wallet = shop.new_phone(shared.server, tmp_path / shared.name, user, ["v3"])
        target = dataclasses.replace(shared, wallet=wallet, user=user)
        before = ledger_state(target.server)
        answers: Counter[str] = Counter()
        slow: dict[str, float] = {}
        for case in HOSTILE:
            figures.operations += 1
            figures.faults += 1
            started = time.monotonic()
            judge_reply(figures, target, case, answers)
            if time.monotonic() - started > 2.0:  # the server waited for bytes never sent
                slow[case.name] = round(time.monotonic() - started, 1)
        if ledger_state(target.server) != before:
            figures.anomaly(f"{target.name}: the ledger changed under hostile requests")
        # The same customer and till do pay when asked properly: the refusals were the inputs'.
        paid = shop.charge(target.till, shop.code_of(wallet, "v3"), "1.00")
        figures.operations += 1
        if paid.get("status") != "succeeded":
            figures.anomaly(f"{target.name}: a clean charge after the hostile ones: {paid}")
        figures.details[target.name] = dict(sorted(answers.items()))
        if slow:
            figures.details[f"{target.name}: answered after a wait (s)"] = slow
    assert figures.anomalies == 0, figures.anomaly_notes


def judge_reply(figures: Figures, target: Target, case: Hostile, answers: Counter[str]) -> None:
    attempts = 3 if case.closed_ok else 1
    reply = answer_of(target, case.request, half_close=case.half_close, attempts=attempts)
    where = f"{target.name} {case.name}"
    if reply.status is None:
        answers["connection closed, no answer"] += 1
        if not (case.http_layer or case.closed_ok):
            figures.anomaly(f"{where}: the connection closed without an answer")
        return
    code = _problem_code(reply)
    answers[f"{reply.status} {code or reply.content_type}"] += 1
    from_http_layer = case.http_layer and 400 <= reply.status < 500 and code is None
    if from_http_layer and b"Traceback" not in reply.body:
        return
    found = problem_anomaly(reply.status, reply.content_type, reply.body)
    if found:
        figures.anomaly(f"{where}: {found}")
    elif case.statuses and reply.status not in case.statuses:
        figures.anomaly(f"{where}: {reply.status} {code}, expected {case.statuses}")
    elif reply.status < 400:
        figures.anomaly(f"{where}: accepted with {reply.status}")


def _problem_code(reply: Reply) -> str | None:
    if not reply.content_type.startswith("application/problem+json"):
        return None
    try:
        found = json.loads(reply.body).get("code")
    except (ValueError, AttributeError):
        return None
    return str(found) if found else None


# == regressions ================================================================================


def test_regression_grant_server_time_out_of_range() -> None:
    """read_grant raised OverflowError for a server_time no float holds, and took NaN."""
    rng = random.Random(3)
    grant = build_grant(
        version="v2",
        device_id="dev_1",
        handle=rng.randbytes(8),
        server_time_s=1.0,
        device_key=rng.randbytes(32),
        hiding_key=rng.randbytes(32),
    )
    for server_time in (10**400, math.nan, math.inf, -math.inf):
        with pytest.raises(EnrollmentInvalid, match="server_time"):
            read_grant(grant | {"server_time": server_time})


def test_regression_client_response_hostile_json() -> None:
    """A wallet or till reading a hostile reply raised RecursionError (deep nesting) or
    ValueError (over 4300 digits), OverflowError (a huge server_time), or learned a NaN clock."""
    for raw in (b"[" * 100_000, b'{"a": ' + b"9" * 5000 + b"}"):
        assert client_api._json_body(raw) == {}
    for number in ("1" + "0" * 400, "NaN", "Infinity", "-Infinity", "1e999"):
        body = client_api._json_body(b'{"server_time": %s}' % number.encode())
        assert client_api._clock_offset(body, None, 1_796_000_000.0) is None


def test_regression_terminal_signature_with_a_lone_surrogate() -> None:
    """terminal_auth.signature_valid raised UnicodeEncodeError for a path, method or nonce
    holding a lone surrogate; nobody can have signed one, so it is simply not valid."""
    for path, nonce in (("/v1/\ud800", "n" * 32), ("/v1/charges", "\udfff" * 16)):
        valid = terminal_auth.signature_valid(
            b"k" * 32, "POST", path, b"", timestamp_s=1, nonce=nonce, signature_b64="AAAA"
        )
        assert valid is False


def test_regression_server_body_edge_cases(targets: list[Target]) -> None:
    """Each was a 500 or a silently truncated body before: a lone surrogate escape reaching
    the database, a malformed chunked body under gunicorn, a chunked body over the limit read
    as its first 64 KiB, NUL in a body or query (a 500 on PostgreSQL, which refuses it in
    text; refused at the door on every database now); and a repeated key was read last-wins."""
    target = targets[0]
    assert target.name.endswith("-serve"), "the chunked case needs gunicorn"
    cases = {
        "lone surrogate": (login(b'{"user": "\\ud800", "password": "x"}'), 400),
        "bad chunk size": (chunked_charge(b"{}", b"zz\r\n{}\r\n0\r\n\r\n"), 400),
        "chunked over the limit": (
            lambda _t: raw_request(
                "POST",
                "/v1/wallet/sessions",
                headers={"Content-Type": "application/json"},
                chunked=chunks(b'{"user": "nobody", "password": "x"}' + b" " * 70_000),
            ),
            413,
        ),
        "repeated key": (login(b'{"user": "a", "user": "b", "password": "x"}'), 400),
        "NUL in a body": (login(b'{"user": "a\\u0000", "password": "x"}'), 400),
        "NUL in a query": (signed_get("/v1/payments?merchant_order_id=%00"), 400),
    }
    for name, (build, status) in cases.items():
        reply = answer_of(target, build, half_close=False)
        assert (reply.status, reply.content_type) == (status, "application/problem+json"), (
            name,
            reply,
        )
