"""`make demo`: provision a wallet, make a code of each version, scan it back and verify it.

There is no server process yet, so a local issuer plays the server's part with the same shared
functions the server will call (build_grant, verify_code). The wallet is driven through its
real console script, the PNGs it writes are decoded with zxing-cpp, and the decoded text goes
through the shared verifier.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from client.wallet import Wallet
from merchant_pos.scanner import decode_image_file
from shared.enrollment import build_grant, new_ed25519_seed
from shared.errors import CodeMalformed
from shared.verify import verify_code
from shared.versions.base import Accepted, DeviceRecord, VerifierKeys, VerifyContext
from shared.versions.registry import VERSIONS, by_name

OUT = Path("demo-out")
PASSPHRASE = "demo passphrase (use the OS keystore on a phone)"


class LocalIssuer:
    """The server's side of enrollment and verification, in memory, for this demo only."""

    def __init__(self) -> None:
        seal = X25519PrivateKey.generate()
        self.seal_public = seal.public_key().public_bytes_raw()
        hiding = {"v1": os.urandom(32), "v2": os.urandom(32)}
        self.hiding = hiding
        self.keys = VerifierKeys(
            hiding_keys={v: (k,) for v, k in hiding.items()}, seal_keys=(seal.private_bytes_raw(),)
        )
        self.devices: dict[tuple[str, bytes], DeviceRecord] = {}

    def enroll(self, version: str, public_key: bytes = b"") -> dict[str, object]:
        handle = by_name(version).new_handle()
        device_id = f"dev_{version}_{handle.hex()[:6]}"
        if version == "v3":
            self.devices[(version, handle)] = DeviceRecord(device_id, handle, public_key)
            return build_grant(
                version=version,
                device_id=device_id,
                handle=handle,
                server_time_s=time.time(),
                seal_public_key=self.seal_public,
            )
        device_key = os.urandom(32)
        self.devices[(version, handle)] = DeviceRecord(device_id, handle, device_key)
        return build_grant(
            version=version,
            device_id=device_id,
            handle=handle,
            server_time_s=time.time(),
            device_key=device_key,
            hiding_key=self.hiding[version],
        )

    def context(self, now_s: float) -> VerifyContext:
        return VerifyContext(now_s, lambda v, h: self.devices.get((v, h)), self.keys)


def wallet_cli(home: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PAYCODE_WALLET_PASSPHRASE": PASSPHRASE}
    command = [sys.executable, "-m", "client.cli", "--home", str(home), "--json", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    reply: dict[str, Any] = json.loads(done.stdout)
    if done.returncode != 0:
        raise SystemExit(f"paycode-wallet {' '.join(args)} failed: {reply.get('error')}")
    return reply


def provision(issuer: LocalIssuer, home: Path) -> None:
    os.environ["PAYCODE_WALLET_PASSPHRASE"] = PASSPHRASE
    wallet = Wallet.open_or_create(home)
    for codec in VERSIONS:
        seed, public = new_ed25519_seed() if codec.version == "v3" else (b"", b"")
        info = wallet.add_grant(issuer.enroll(codec.version, public), ed25519_seed=seed)
        print(f"  enrolled {info.version:<3} device {info.device_id}")


def scan_and_verify(issuer: LocalIssuer, png: Path, expected: str) -> str:
    decoded = decode_image_file(png, backend="zxing")
    if [d.text for d in decoded] != [expected]:
        raise SystemExit(f"{png}: zxing read {[d.text[:16] for d in decoded]}, expected the code")
    result = verify_code(decoded[0].text, issuer.context(time.time()))
    if not isinstance(result, Accepted):
        raise SystemExit(f"{png}: verifier refused the code: {result.reason} ({result.detail})")
    device = result.device.device_id
    return f"{decoded[0].format:<8} -> {result.version} device {device} step {result.step}"


def show_refusals(issuer: LocalIssuer, home: Path) -> None:
    code = wallet_cli(home, "code", "--version", "v1")["code"]
    typo = code[:10] + str((int(code[10]) + 1) % 10) + code[11:]
    try:
        verify_code(typo, issuer.context(time.time()))
    except CodeMalformed as error:
        print(f"  one mistyped digit      -> {error.code}: {error.message}")
    late = verify_code(code, issuer.context(time.time() + 180))
    outcome = "accepted?!" if isinstance(late, Accepted) else late.reason
    print(f"  the same code 3 min on  -> {outcome}")


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    home = OUT / "wallet"
    issuer = LocalIssuer()
    print("1. provisioning a wallet (local issuer stands in for the server until it lands)")
    provision(issuer, home)
    print("2. each version: paycode-wallet makes a code and PNGs; zxing-cpp reads them back;")
    print("   the shared verifier checks what was read")
    for codec in VERSIONS:
        png = OUT / f"{codec.version}.png"
        reply = wallet_cli(home, "code", "--version", codec.version, "--png", str(png))
        shown = reply["code"] if len(reply["code"]) < 48 else reply["code"][:44] + "..."
        print(f"  {codec.version}: {shown}  ({len(reply['code'])} chars)")
        for name in reply["files"]:
            print(
                f"     {Path(name).name:<16} {scan_and_verify(issuer, Path(name), reply['code'])}"
            )
    print("3. what a wrong code gets")
    show_refusals(issuer, home)
    print(f"done: images in {OUT}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
