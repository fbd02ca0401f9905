"""The web wallet's JavaScript core (webwallet/src/core) against the Python reference.

docs/spec.md §11: a second implementation passes when the reference verifier accepts its codes
with the same step, counter and flags. Here the keys are fresh (made in Python for this run, not
the vectors' keys): one node process (webwallet/scripts/make_codes.mjs) makes codes for all three
versions, bound and unbound, signs wallet API requests and reads merchant QR payloads; the
Python reference then verifies every code, every signature and every reading.

Never skipped: without node or webwallet/node_modules the tests fail and say what is missing, so
CI cannot pass without running them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.shared import wallet_auth
from paycode.shared.binding import MerchantBinding, charging_point_bindings
from paycode.shared.emv.collection import CollectionCode, build_collection_payload, read_collection
from paycode.shared.emv.mpm import crc16_ccitt_false, decode_mpm
from paycode.shared.emv.qr_signature import b64url, verify_signature
from paycode.shared.errors import EmvFormatError, NotPaycodeCollection
from paycode.shared.verify import verify_code
from paycode.shared.versions.base import Accepted, DeviceCredential, Reason, Rejected
from paycode.shared.versions.registry import by_name
from tests.support.protocol import CodeServer

REPO = Path(__file__).resolve().parents[2]
WEBWALLET = REPO / "webwallet"
SCRIPT = WEBWALLET / "scripts" / "make_codes.mjs"
NODE_MAJOR_MIN = 20
NOW_S = 1_800_000_015.0
SEED = int.from_bytes(os.urandom(8), "big")
"""Fresh every run (printed on failure through the test ids' messages): keys and cases."""
RNG = random.Random(SEED)
MERCHANT, TERMINAL = "mer_js_cross_check", "till-7"
VECTORS = REPO / "tests" / "vectors"


def fresh(size: int) -> bytes:
    return RNG.randbytes(size)


def _node() -> str:
    """The node binary, or a failure that says what is missing (never a skip)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node is not installed: the web wallet's JavaScript core cannot be cross-checked "
            f"(install Node {NODE_MAJOR_MIN}+ and run `npm ci` in webwallet/)",
            pytrace=False,
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    if int(version.strip().lstrip("v").split(".")[0]) < NODE_MAJOR_MIN:
        pytest.fail(f"node {version.strip()} is too old: need {NODE_MAJOR_MIN}+", pytrace=False)
    for package in ("@noble/ciphers", "@noble/curves"):
        if not (WEBWALLET / "node_modules" / package / "package.json").is_file():
            pytest.fail(
                f"webwallet/node_modules/{package} is missing: run `npm ci` in webwallet/",
                pytrace=False,
            )
    return node


def run_js(request: dict[str, Any]) -> dict[str, Any]:
    completed = subprocess.run(
        [_node(), str(SCRIPT)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=WEBWALLET,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        pytest.fail(f"make_codes.mjs failed (seed {SEED}):\n{completed.stderr}", pytrace=False)
    response: dict[str, Any] = json.loads(completed.stdout)
    return response


# --- payment codes ----------------------------------------------------------------------------


def _credential_json(credential: DeviceCredential) -> dict[str, Any]:
    item: dict[str, Any] = {"version": credential.version, "handle": credential.handle.hex()}
    if credential.version == "v3":
        item |= {
            "ed25519_seed": credential.secret.hex(),
            "seal_public": credential.seal_public_key.hex(),
        }
    else:
        item |= {"device_key": credential.secret.hex(), "hiding_key": credential.hiding_key.hex()}
    return item


def _code_cases(server: CodeServer) -> list[dict[str, Any]]:
    """Several steps (the whole window), counters and flags per device; bound v2/v3 codes to
    the merchant only and to one terminal; a few v3 codes with an ephemeral key from here."""
    cases: list[dict[str, Any]] = []
    for version, credentials in server.credentials.items():
        counter_max = by_name(version).counter_max
        counters = sorted({0, 1, counter_max, RNG.randrange(counter_max + 1)})
        for credential in credentials:
            for step in (server.step - 1, server.step, server.step + 1):
                for counter in counters:
                    for flags in (0,) if version == "v1" else (0, 1):
                        cases.append(
                            {
                                "credential": credential,
                                "step": step,
                                "counter": counter,
                                "flags": flags,
                            }
                        )
                if version == "v1":
                    continue
                for terminal in (None, TERMINAL):
                    for flags in (2, 3):
                        counter = RNG.randrange(counter_max + 1)
                        binding = {"merchant_id": MERCHANT, "terminal_id": terminal}
                        cases.append(
                            {
                                "credential": credential,
                                "step": step,
                                "counter": counter,
                                "flags": flags,
                                "binding": binding,
                            }
                        )
    for case in [c for c in cases if c["credential"].version == "v3"][::7]:
        case["ephemeral_private"] = fresh(32)
    return cases


@pytest.fixture(scope="module")
def codes() -> tuple[CodeServer, list[dict[str, Any]], list[dict[str, Any]]]:
    server = CodeServer.new(NOW_S, randbytes=fresh)
    for version in ("v1", "v2", "v3"):
        for _ in range(2):
            server.enroll(version, randbytes=fresh)
    cases = _code_cases(server)
    request = []
    for case in cases:
        item = _credential_json(case["credential"]) | {
            k: case[k] for k in ("step", "counter", "flags") if k in case
        }
        if "binding" in case:
            item["binding"] = case["binding"]
        if "ephemeral_private" in case:
            item["ephemeral_private"] = case["ephemeral_private"].hex()
        request.append(item)
    response = run_js({"codes": request})["codes"]
    assert len(response) == len(cases)
    return server, cases, response


def _digest(case: dict[str, Any]) -> bytes:
    binding = case.get("binding")
    if binding is None:
        return b""
    return MerchantBinding(binding["merchant_id"], binding["terminal_id"]).digest


def test_js_codes_cover_every_version_bound_and_unbound(codes: Any) -> None:
    _, cases, results = codes
    assert all("code" in result for result in results), [r for r in results if "code" not in r]
    kinds = {(c["credential"].version, "binding" in c) for c in cases}
    assert kinds == {("v1", False), ("v2", False), ("v2", True), ("v3", False), ("v3", True)}
    assert len(cases) >= 100
    texts = [result["code"] for result in results]
    assert len(set(texts)) == len(texts), "every (device, step, counter, flags) gives its own code"


def test_the_reference_accepts_every_js_code_with_its_step_counter_and_flags(codes: Any) -> None:
    server, cases, results = codes
    for case, result in zip(cases, results, strict=True):
        credential: DeviceCredential = case["credential"]
        digest = _digest(case)
        if digest:
            assert result["binding_digest"] == digest.hex()
            terminal = case["binding"]["terminal_id"] or "till-of-the-same-merchant"
            bindings = charging_point_bindings(MERCHANT, terminal)
        else:
            assert "binding_digest" not in result
            bindings = ()
        ctx = server.registry.context(server.keys, NOW_S, bindings=bindings)
        verdict = verify_code(result["code"], ctx)
        where = f"seed {SEED}, {credential.version} step {case['step']} counter {case['counter']}"
        assert isinstance(verdict, Accepted), f"{where}: {verdict}"
        assert verdict.device.handle == credential.handle, where
        assert (verdict.step, verdict.counter, verdict.flags) == (
            case["step"],
            case["counter"],
            case["flags"],
        ), where


def test_js_symmetric_codes_equal_the_references_byte_for_byte(codes: Any) -> None:
    """v1 and v2 are deterministic, and so is v3 given its ephemeral key."""
    _, cases, results = codes
    compared = 0
    for case, result in zip(cases, results, strict=True):
        credential: DeviceCredential = case["credential"]
        if credential.version == "v3" and "ephemeral_private" not in case:
            continue
        ephemeral = case.get("ephemeral_private", b"")
        expected = by_name(credential.version).generate(
            credential,
            step=case["step"],
            counter=case["counter"],
            flags=case["flags"],
            binding=_digest(case),
            rng=lambda size, e=ephemeral: e[:size],
        )
        assert result["code"] == expected, f"seed {SEED}: {case}"
        compared += 1
    assert compared >= 60


def test_bound_js_codes_do_not_pay_elsewhere(codes: Any) -> None:
    server, cases, results = codes
    bound = [(c, r) for c, r in zip(cases, results, strict=True) if "binding" in c]
    assert bound
    elsewhere = (MerchantBinding("mer_other_shop").digest,)
    for case, result in bound:
        for bindings in (elsewhere, ()):
            ctx = server.registry.context(server.keys, NOW_S, bindings=bindings)
            verdict = verify_code(result["code"], ctx)
            assert isinstance(verdict, Rejected), case
            assert verdict.reason is Reason.MERCHANT_MISMATCH, (case, verdict)


def test_js_codes_expire_and_name_no_unknown_device(codes: Any) -> None:
    server, cases, results = codes
    for case, result in list(zip(cases, results, strict=True))[::5]:
        bindings = charging_point_bindings(MERCHANT, TERMINAL) if "binding" in case else ()
        late = server.registry.context(server.keys, NOW_S + 150, bindings=bindings)
        verdict = verify_code(result["code"], late)
        assert isinstance(verdict, Rejected) and verdict.reason is Reason.CODE_EXPIRED, case
    other = CodeServer.new(NOW_S, randbytes=fresh)
    for case, result in list(zip(cases, results, strict=True))[::5]:
        verdict = verify_code(result["code"], other.context())
        assert isinstance(verdict, Rejected), case
        assert verdict.reason in {Reason.CODE_INVALID, Reason.MERCHANT_MISMATCH}, case


def test_js_refuses_what_the_reference_refuses() -> None:
    """v1 codes cannot be bound; counters and flags out of range; the flag without a binding."""
    v1 = DeviceCredential("v1", b"\0\0\0\0\1", fresh(32), hiding_key=fresh(32))
    v2 = DeviceCredential("v2", fresh(8), fresh(32), hiding_key=fresh(32))
    bound = {"merchant_id": MERCHANT, "terminal_id": None}
    requests = [
        (v1, {"step": 5, "counter": 0, "flags": 2, "binding": bound}, "binding_unsupported"),
        (v1, {"step": 5, "counter": 0, "flags": 1}, "binding_unsupported"),
        (v1, {"step": 5, "counter": 10, "flags": 0}, "counter_exhausted"),
        (v2, {"step": 5, "counter": 65536, "flags": 0}, "counter_exhausted"),
        (v2, {"step": 2**32, "counter": 0, "flags": 0}, "invalid_argument"),
        (v2, {"step": 5, "counter": 0, "flags": 2}, "invalid_argument"),
        (v2, {"step": 5, "counter": 0, "flags": 4}, "invalid_argument"),
        (v2, {"step": 5, "counter": 0, "flags": 0, "binding": bound}, "invalid_argument"),
    ]
    items = [_credential_json(c) | args for c, args, _ in requests]
    results = run_js({"codes": items})["codes"]
    for (credential, args, code), result in zip(requests, results, strict=True):
        assert result.get("error") == code, (args, result)
        with pytest.raises(ValueError):
            binding = MerchantBinding(MERCHANT).digest if "binding" in args else b""
            by_name(credential.version).generate(
                credential,
                step=args["step"],
                counter=args["counter"],
                flags=args["flags"],
                binding=binding,
            )


# --- wallet API signatures --------------------------------------------------------------------


@pytest.fixture(scope="module")
def signatures() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    bodies = [
        b"",
        b'{"amount":"12.50","pin":"123456"}',
        '{"label":"Ålice 的手机"}'.encode(),
        fresh(40),
    ]
    paths = ["/v1/wallet/balance", "/v1/wallet/history?limit=20", "/v1/wallet/devices/dev_1/revoke"]
    cases: list[dict[str, Any]] = []
    for version in ("v1", "v2", "v3"):
        for index in range(4):
            seed = fresh(32)
            public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
            device_key = fresh(32)
            case: dict[str, Any] = {
                "version": version,
                "method": RNG.choice(["GET", "POST", "post"]),
                "path": paths[index % len(paths)],
                "timestamp": 1_800_000_000 + RNG.randrange(10**6),
                "nonce": fresh(16).hex(),
                "body": bodies[index].hex(),
                "device_id": f"dev_{fresh(6).hex()}",
                "now": NOW_S + RNG.random() * 1000,
            }
            if version == "v3":
                case |= {"ed25519_seed": seed.hex(), "server_key": public.hex()}
            else:
                case |= {"device_key": device_key.hex(), "server_key": device_key.hex()}
            cases.append(case)
    request = [{k: v for k, v in case.items() if k != "server_key"} for case in cases]
    results = run_js({"wallet_auth": request})["wallet_auth"]
    assert len(results) == len(cases)
    return cases, results


def test_js_signing_message_is_the_references(signatures: Any) -> None:
    for case, result in zip(*signatures, strict=True):
        expected = wallet_auth.signing_message(
            case["method"],
            case["path"],
            case["timestamp"],
            case["nonce"],
            bytes.fromhex(case["body"]),
        )
        assert result["message"] == expected.hex(), case


def test_js_wallet_signatures_verify_with_the_reference(signatures: Any) -> None:
    for case, result in zip(*signatures, strict=True):
        key = bytes.fromhex(case["server_key"])
        message = bytes.fromhex(result["message"])
        assert wallet_auth.signature_valid(case["version"], key, message, result["signature"])
        assert not wallet_auth.signature_valid(
            case["version"], key, message + b"x", result["signature"]
        )
        if case["version"] != "v3":  # the reference's own signature is the same HMAC
            credential = DeviceCredential(case["version"], b"", key)
            assert wallet_auth.sign(credential, message) == result["signature"]


def test_js_signed_headers_verify_with_the_reference(signatures: Any) -> None:
    for case, result in zip(*signatures, strict=True):
        headers = result["headers"]
        assert list(headers) == [
            "Paycode-Device",
            "Paycode-Timestamp",
            "Paycode-Nonce",
            "Paycode-Signature",
        ]
        assert headers["Paycode-Device"] == case["device_id"]
        assert headers["Paycode-Timestamp"] == str(int(case["now"]))
        nonce = headers["Paycode-Nonce"]
        assert len(nonce) == 32 and int(nonce, 16) >= 0 and nonce == nonce.lower()
        message = wallet_auth.signing_message(
            case["method"],
            case["path"],
            int(headers["Paycode-Timestamp"]),
            nonce,
            bytes.fromhex(case["body"]),
        )
        key = bytes.fromhex(case["server_key"])
        assert wallet_auth.signature_valid(
            case["version"], key, message, headers["Paycode-Signature"]
        )


# --- merchant QR payloads ---------------------------------------------------------------------

FIELD_NAMES = {
    "merchant_id": "merchantId",
    "merchant_name": "merchantName",
    "merchant_city": "merchantCity",
    "currency": "currency",
    "country_code": "countryCode",
    "terminal_id": "terminalId",
    "amount": "amountText",
    "reference": "merchantOrderId",
    "mcc": "mcc",
    "order_token": "orderToken",
    "language": "language",
    "local_name": "localName",
    "local_city": "localCity",
}
MUTATIONS = "0123456789AZaz.* \x00é😀北"


def _resigned(text: str) -> str:
    unsigned = text[:-4]
    return unsigned + f"{crc16_ccitt_false(unsigned.encode('utf-8')):04X}"


def _collections(sign: Any) -> list[str]:
    base = CollectionCode("mer_0123456789abcdef", "Corner Cafe", "Shanghai", "CNY")
    codes = [
        base,
        replace(base, terminal_id="till-7", amount="12.5", reference="INV-1"),
        replace(base, amount="88", order_token="AAECAwQFBgcICQoLDA0ODxAR", currency="JPY"),
        replace(
            base,
            language="ZH",
            local_name="北京烤鸭店",
            local_city="北京",
            amount="1.234",
            currency="KWD",
        ),
        replace(base, language="EN", local_name="Café 😀 Ünïcödé", local_city="🏙️ city"),
    ]
    payloads = [build_collection_payload(code, sign) for code in codes]
    payloads += [build_collection_payload(code) for code in codes[:2]]
    payloads += [
        json.loads((VECTORS / "mpm_payloads.json").read_text("utf-8"))["valid"][0]["payload"]
    ]
    return payloads


def _mutants(payloads: list[str], count: int) -> list[str]:
    """Splice, delete and insert characters; most are re-closed with a correct CRC so the
    readers get past it and into the templates and the collection rules."""
    out = []
    for _ in range(count):
        text = RNG.choice(payloads)
        for _ in range(RNG.randint(1, 3)):
            at = RNG.randrange(len(text) + 1)
            insert = "".join(RNG.choice(MUTATIONS) for _ in range(RNG.randint(0, 3)))
            text = text[:at] + insert + text[at + (len(insert) // 2 if insert else 1) :]
        if RNG.random() < 0.7 and len(text) >= 8:
            text = _resigned(text)
        out.append(text)
    return out


def _value_edits(payloads: list[str], count: int) -> list[str]:
    """One character of one value (any object or template child) replaced, lengths kept, CRC
    recomputed: the text stays readable, so the rules, amounts and signatures are compared."""
    out = []
    for _ in range(count):
        text = RNG.choice(payloads)
        objects = [o for top in decode_mpm(text).objects[:-1] for o in (top, *(top.children or ()))]
        item = RNG.choice([o for o in objects if o.value])
        at = item.offset + 4 + RNG.randrange(len(item.value))
        out.append(_resigned(text[:at] + RNG.choice(MUTATIONS + "dv_-") + text[at + 1 :]))
    return out


def _python_reading(payload: str, keys: dict[str, bytes]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        decoded = decode_mpm(payload)
        out["decoded"] = {
            "scheme": decoded.scheme,
            "deviations": [f"{d.rule}:{d.tag}" for d in decoded.deviations],
        }
    except EmvFormatError as error:
        out["decoded"] = {
            "error": str(error.code),
            "name": type(error).__name__,
            "offset": error.offset,
        }
    try:
        read = read_collection(payload)
    except NotPaycodeCollection as error:
        out["collection"] = {"error": str(error.code), "name": "NotPaycodeCollection"}
        return out
    except EmvFormatError as error:
        out["collection"] = {
            "error": str(error.code),
            "name": type(error).__name__,
            "offset": error.offset,
        }
        return out
    fields = {camel: getattr(read, name) for name, camel in FIELD_NAMES.items()}
    fields["initiation"] = "static" if read.amount is None else "dynamic"
    fields["signature"] = read.signature and {
        "keyId": read.signature.key_id,
        "signature": read.signature.signature.hex(),
        "message": read.signature.message.hex(),
    }
    out["collection"] = fields
    out["verdict"] = str(verify_signature(read.signature, keys))
    return out


def test_js_reads_merchant_payloads_as_the_reference_does() -> None:
    key = Ed25519PrivateKey.from_private_bytes(fresh(32))
    key_id = f"sk_{fresh(8).hex()}"
    public = key.public_key().public_bytes_raw()
    payloads = _collections(lambda message: (key_id, key.sign(message)))
    stranger = Ed25519PrivateKey.from_private_bytes(fresh(32))
    payloads.append(
        build_collection_payload(
            CollectionCode("mer_x", "Shop", "City", "USD"),
            lambda m: ("sk_stranger", stranger.sign(m)),
        )
    )
    signed_body = payloads[1][:-8]
    payloads.append(_resigned(signed_body.replace("Corner Cafe", "Corner Cafx") + "6304XXXX"))
    payloads += _mutants(payloads, 300) + _value_edits(payloads[:8], 300)
    keys = [{"key_id": key_id, "public_key": b64url(public)}]
    results = run_js({"mpm": payloads, "qr_keys": keys})["mpm"]
    verdicts = set()
    for payload, result in zip(payloads, results, strict=True):
        expected = _python_reading(payload, {key_id: public})
        if "collection" in result and "error" not in result["collection"]:
            for extra in ("currencyNumeric", "displayName", "displayCity"):
                result["collection"].pop(extra)
        assert result == expected, f"seed {SEED}: {payload!r}"
        verdicts.add(expected.get("verdict"))
    assert verdicts == {"verified", "unsigned", "unknown_key", "altered", None}
