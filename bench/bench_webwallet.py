"""The web wallet on a phone's terms: milliseconds per code in headless Chromium (and Node), next
to the raw WebCrypto primitives timed in the same rounds, and the bytes the app costs: every
file the service worker caches, raw and gzip, and the network bytes of a first load and of a
reload from a live server (figure 7 of `make bench`).

    python -m bench.bench_webwallet [--quick] [--json OUT]

Generation runs the real protocol core (webwallet/src/core/, bundled with esbuild from
webwallet/bench/core_bench_entry.js into a temp folder) in a page served from 127.0.0.1 (a
secure context, so WebCrypto is there; cross-origin isolated, so performance.now() steps by
5 µs instead of 100 µs), with non-extractable keys and a fresh v3 ephemeral per code, as the
app makes them; Node runs the same file unbundled. An HMAC takes about one clock step, so every
op runs in batches of ~2 ms: the median per code is over the batches' means, the p90 over the
codes timed one by one. The ratio to a reference (one HMAC-SHA256 or one Ed25519 sign; or the
floor, every primitive the version must call) is the median of the per-round ratios: this
machine is shared and noisy, so only ratios measured side by side mean anything. One code per
version and runtime is checked by the Python verifier.

The size figures read server/paycode/server/wallet_app/build.json (built first when missing or
older than webwallet/'s sources), raw and gzip -6 (what a compressing proxy would send; the
server does not compress), and load /wallet/ from `paycode-server run` on SQLite in a fresh
profile through a relay that counts the bytes on the wire: the first load (the page, then the
service worker fetching its list) and a reload (answered by the worker; the browser's own
update check of sw.js, which Playwright does not list, is on the wire).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import gzip
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bench import REPO_ROOT
from bench.wire_bytes import CountingRelay, Traffic
from paycode.server.testing import start_server
from paycode.shared.verify import verify_code
from paycode.shared.versions.base import Accepted, DeviceRecord, VerifierKeys, VerifyContext

WEBWALLET = REPO_ROOT / "webwallet"
APP_DIR = REPO_ROOT / "server" / "paycode" / "server" / "wallet_app"
ESBUILD = WEBWALLET / "node_modules" / ".bin" / "esbuild"
ENTRY = WEBWALLET / "bench" / "core_bench_entry.js"
NODE_RUNNER = WEBWALLET / "bench" / "node_bench.mjs"
BUILD_INPUTS = ("src", "static", "build.mjs", "package-lock.json")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [  # as tests/support/browser.py: this machine's network is closed
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
VIEWPORT = {"width": 390, "height": 844}
VERSIONS = ("v1", "v2", "v3")
PRIMITIVE_FOR = {"v1": "hmac", "v2": "hmac", "v3": "ed25519_sign"}
FLOOR_FOR = {"v1": "hmac+aes", "v2": "hmac+aes", "v3": "v3_floor"}
REFERENCES = ("hmac", "hmac+aes", "ed25519_sign", "x25519", "v3_floor")
QUICK = {"rounds": 5, "batches": 25, "batchMs": 2.0}
FULL = {"rounds": 9, "batches": 60, "batchMs": 2.0}
"""Every op (a version's code or a reference) runs `batches` batches a round, each of as many
calls as last about batchMs: 5 µs clock steps cost a 2 ms batch under 0.3 %."""
GZIP_LEVEL = 6
"""Chromium checks the service worker script for an update about 2 s after a controlled
page loads; every load is watched at least this long."""
PAGE_TIMEOUT_MS = 30_000
STEP_S = 30
V1_HANDLE_MODULUS = 10**10


# -- the build and the bundle ---------------------------------------------------------------------


def ensure_built() -> str:
    """Run `node webwallet/build.mjs` when build.json is missing or older than a source."""
    built = APP_DIR / "build.json"
    newest = max(
        path.stat().st_mtime
        for name in BUILD_INPUTS
        for path in (WEBWALLET / name, *(WEBWALLET / name).rglob("*"))
        if path.is_file()
    )
    if built.is_file() and built.stat().st_mtime >= newest:
        return "up to date"
    done = subprocess.run(
        ["node", str(WEBWALLET / "build.mjs")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"node webwallet/build.mjs failed:\n{done.stdout}{done.stderr}")
    return "rebuilt: " + done.stdout.strip()


def bundle_core(folder: Path) -> int:
    """core_bench_entry.js and the core it imports as one IIFE (global paycodeBench), minified
    for the app's browser targets as build.mjs does; its size in bytes."""
    out = folder / "core_bench.js"
    subprocess.run(
        [
            str(ESBUILD),
            str(ENTRY),
            "--bundle",
            "--minify",
            "--format=iife",
            "--global-name=paycodeBench",
            "--target=chrome109,safari16,firefox115",
            f"--outfile={out}",
            "--log-level=warning",
        ],
        cwd=WEBWALLET,
        check=True,
    )
    (folder / "index.html").write_text(
        '<!doctype html><meta charset="utf-8"><title>core bench</title>'
        '<script src="core_bench.js"></script>'
    )
    return out.stat().st_size


class _IsolatedHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with the two headers that make the page cross-origin isolated."""

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the benchmark's output is its tables


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[str]:
    handler = functools.partial(_IsolatedHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# -- generation -----------------------------------------------------------------------------------


class Devices:
    """Random raw keys for one device of each version (the page imports them non-extractable)
    and the server's side, to check the codes each runtime makes."""

    def __init__(self) -> None:
        self.seal = X25519PrivateKey.generate()
        self.hiding = {"v1": os.urandom(32), "v2": os.urandom(32)}
        self.device_keys = {"v1": os.urandom(32), "v2": os.urandom(32)}
        v1_handle = int.from_bytes(os.urandom(5)) % V1_HANDLE_MODULUS
        self.handles = {"v1": v1_handle.to_bytes(5), "v2": os.urandom(8), "v3": os.urandom(8)}

    def config(self, step: int, quick: bool) -> dict[str, Any]:
        devices: dict[str, dict[str, str]] = {
            version: {
                "handle": self.handles[version].hex(),
                "deviceKey": self.device_keys[version].hex(),
                "hidingKey": self.hiding[version].hex(),
            }
            for version in ("v1", "v2")
        }
        seal_public = self.seal.public_key().public_bytes_raw()
        devices["v3"] = {"handle": self.handles["v3"].hex(), "sealPublic": seal_public.hex()}
        return {"step": step, "devices": devices} | (QUICK if quick else FULL)

    def check(self, result: dict[str, Any], runtime: str) -> None:
        """Every version's code from this runtime is accepted by the Python verifier."""
        keys = VerifierKeys(
            {version: (key,) for version, key in self.hiding.items()},
            (self.seal.private_bytes_raw(),),
        )
        table = {
            (version, self.handles[version]): DeviceRecord(
                f"d_{version}", self.handles[version], self.device_keys[version]
            )
            for version in ("v1", "v2")
        }
        v3_public = bytes.fromhex(result["publicKeys"]["v3"])
        table[("v3", self.handles["v3"])] = DeviceRecord("d_v3", self.handles["v3"], v3_public)
        context = VerifyContext(time.time(), lambda v, h: table.get((v, h)), keys)
        for version in VERSIONS:
            outcome = verify_code(result["codes"][version], context)
            if not isinstance(outcome, Accepted):
                raise SystemExit(f"{runtime} made a {version} code the verifier refuses: {outcome}")


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Per op: the median over its batches of the ms per call, the p90 of the calls timed
    alone; per version: its ratios to its references, the median of the per-round ratios."""
    raw: dict[str, dict[str, Any]] = result["ops"]

    def ratio(a: str, b: str) -> float:
        pairs = zip(raw[a]["roundMediansMs"], raw[b]["roundMediansMs"], strict=True)
        return float(statistics.median(x / y for x, y in pairs))

    ops = {
        name: {
            "median_ms": statistics.median(op["batchMeansMs"]),
            "p90_ms": op["singleP90Ms"],
            "single_median_ms": op["singleMedianMs"],
            "calls": op["singles"],
            "batch": op["batch"],
        }
        for name, op in raw.items()
    }
    versions = {
        version: ops[version]
        | {
            "prim": PRIMITIVE_FOR[version],
            "prim_ms": ops[PRIMITIVE_FOR[version]]["median_ms"],
            "gen_vs_prim": ratio(version, PRIMITIVE_FOR[version]),
            "floor": FLOOR_FOR[version],
            "floor_ms": ops[FLOOR_FOR[version]]["median_ms"],
            "gen_vs_floor": ratio(version, FLOOR_FOR[version]),
        }
        for version in VERSIONS
    }
    return {
        "runtime": result["runtime"],
        "isolated": result["isolated"],
        "versions": versions,
        "references": {name: ops[name] for name in REFERENCES},
    }


def in_chromium(browser: Any, folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    context = browser.new_context()
    try:
        page = context.new_page()
        with serving(folder) as url:
            page.goto(f"{url}/index.html")
            page.wait_for_function("typeof paycodeBench !== 'undefined'")
            secure = page.evaluate("window.isSecureContext && !!crypto.subtle")
            assert secure, "the bench page must be a secure context (WebCrypto)"
            result: dict[str, Any] = page.evaluate(
                "config => paycodeBench.runBench(config)", config
            )
    finally:
        context.close()
    return result


def in_node(config: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        ["node", str(NODE_RUNNER), json.dumps(config)],
        cwd=WEBWALLET,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"node {NODE_RUNNER.name} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def print_generation(results: dict[str, dict[str, Any]], config: dict[str, Any]) -> None:
    print(
        f"\ncode generation, ms per code: {config['rounds']} rounds of {config['batches']} "
        f"batches of ~{config['batchMs']:g} ms; median over the batches, p90 of the codes "
        "timed one by one"
    )
    print(
        f"{'runtime':<10}{'version':<8}{'median':>8}{'p90':>8}{'codes/s':>9}{'codes':>8}"
        f"{'x prim':>8}  {'prim (ms)':<20}{'x floor':>8}  floor (ms)"
    )
    for runtime, r in results.items():
        for version, v in r["versions"].items():
            prim = f"{v['prim']} {v['prim_ms']:.4f}"
            print(
                f"{runtime:<10}{version:<8}{v['median_ms']:>8.4f}{v['p90_ms']:>8.3f}"
                f"{1000 / v['median_ms']:>9.0f}{v['calls']:>8}{v['gen_vs_prim']:>8.2f}  "
                f"{prim:<20}{v['gen_vs_floor']:>8.2f}  {v['floor']} {v['floor_ms']:.4f}"
            )
        refs = ", ".join(f"{k} {v['median_ms']:.4f}" for k, v in r["references"].items())
        print(f"{'':<10}references, median ms: {refs}")
    print("x prim: time per code / one raw WebCrypto call (HMAC-SHA256 sign of 32 bytes for")
    print("v1/v2, Ed25519 sign for v3); x floor: / every primitive the version must call (v1/v2:")
    print("HMAC + one AES block; v3: X25519 pair (@noble, pure JS) + HKDF + ChaCha20-Poly1305 +")
    print("Ed25519 sign). Both ratios are medians of per-round ratios, measured side by side.")
    if "chromium" in results and "node" in results:
        chromium, node = results["chromium"]["versions"], results["node"]["versions"]
        cells = ", ".join(
            f"{v} {chromium[v]['median_ms'] / node[v]['median_ms']:.2f}x" for v in VERSIONS
        )
        print(f"chromium / node, ms per code: {cells} (one after the other, not interleaved)")


# -- size and transfer ----------------------------------------------------------------------------


def asset_sizes() -> tuple[str, list[dict[str, Any]]]:
    build = json.loads((APP_DIR / "build.json").read_text())
    rows = []
    for name in build["assets"]:
        data = (APP_DIR / name).read_bytes()
        packed = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
        rows.append({"name": name, "raw": len(data), "gzip": len(packed)})
    return str(build["version"]), rows


def load_ms(page: Any) -> float:
    value = page.evaluate(
        "(() => { const n = performance.getEntriesByType('navigation')[0];"
        " return n ? n.loadEventEnd - n.startTime : -1; })()"
    )
    return float(value)


def measure_transfer(browser: Any) -> dict[str, Any]:
    """/wallet/ from a live server, through the counting relay, in a fresh profile: the first
    load (the page, then the service worker installing), then a reload (the worker answers)."""
    with start_server("sqlite") as server:
        relay = CountingRelay(int(server.url.rsplit(":", 1)[1]))
        origin = f"http://127.0.0.1:{relay.port}"
        context = browser.new_context(viewport=VIEWPORT, is_mobile=True, has_touch=True)
        try:
            traffic = Traffic(context, relay)
            page = context.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            started = time.monotonic()
            page.goto(f"{origin}/wallet/", wait_until="load")
            first_ms = load_ms(page)
            page.evaluate("navigator.serviceWorker.ready.then(() => true)")
            page.wait_for_function("!!navigator.serviceWorker.controller")
            traffic.settle(page, started)
            first = traffic.take(origin) | {"load_ms": first_ms}
            started = time.monotonic()
            page.reload(wait_until="load")
            reload_ms = load_ms(page)
            controlled = page.evaluate("!!navigator.serviceWorker.controller")
            traffic.settle(page, started)
            again = traffic.take(origin) | {"load_ms": reload_ms, "controlled": controlled}
        finally:
            context.close()
            relay.close()
    return {"first_load": first, "reload": again}


def print_sizes(version: str, assets: list[dict[str, Any]], transfer: dict[str, Any]) -> None:
    print(f"\nthe app the service worker keeps (build {version}), bytes:")
    print(f"{'file':<24}{'raw':>10}{'gzip -6':>10}{'gzip/raw':>10}")
    for row in assets:
        print(
            f"{row['name']:<24}{row['raw']:>10}{row['gzip']:>10}{row['gzip'] / row['raw']:>10.2f}"
        )
    raw, packed = sum(r["raw"] for r in assets), sum(r["gzip"] for r in assets)
    print(f"{'total':<24}{raw:>10}{packed:>10}{packed / raw:>10.2f}")
    for name, load in transfer.items():
        print(
            f"\n{name.replace('_', ' ')} of /wallet/ from the live server (uncompressed), "
            f"bytes on the wire: {load['down_bytes']} down ({load['down_bytes'] / raw:.2f} x "
            f"the raw app), {load['up_bytes']} up; {load['network_requests']} requests on "
            f"{load['connections']} new connections, {load['from_service_worker']} answered by "
            f"the service worker's cache; load event {load['load_ms']:.0f} ms"
        )
        for row in load["requests"]:
            print(
                f"  {row['by']:<16}{row['status']!s:>4} {row['path']:<30}"
                f"{row['down']:>8} down{row['up']:>6} up"
            )


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and codes: < 1 min")
    parser.add_argument("--no-node", action="store_true", help="the browser only")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - a dev extra

    started = time.monotonic()
    node_version = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    load = os.getloadavg()
    machine = (
        f"{os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"node {node_version}"
    )
    print(f"machine: {machine}")
    print(f"web wallet build: {ensure_built()}")
    build_version, assets = asset_sizes()
    devices = Devices()
    config = devices.config(int(time.time() // STEP_S), args.quick)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="paycode-bench-webwallet-") as temp:
        bundle_bytes = bundle_core(Path(temp))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                browser_version = browser.version
                raw = in_chromium(browser, Path(temp), config)
                devices.check(raw, "chromium")
                results["chromium"] = summarize(raw)
                transfer = measure_transfer(browser)
            finally:
                browser.close()
    if not args.no_node:
        raw = in_node(config | {"step": int(time.time() // STEP_S)})  # the code is checked now
        devices.check(raw, "node")
        results["node"] = summarize(raw)
    print(
        f"chromium {browser_version} (cross-origin isolated: {results['chromium']['isolated']}); "
        f"bench bundle {bundle_bytes} bytes; every code checked by the Python verifier"
    )
    print_generation(results, config)
    print_sizes(build_version, assets, transfer)
    elapsed_s = time.monotonic() - started
    print(f"\n{elapsed_s:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "quick": args.quick,
                    "machine": machine,
                    "chromium": browser_version,
                    "rounds": config["rounds"],
                    "batches": config["batches"],
                    "batch_ms": config["batchMs"],
                    "primitive_for": PRIMITIVE_FOR,
                    "floor_for": FLOOR_FOR,
                    "generation": results,
                    "build_version": build_version,
                    "gzip_level": GZIP_LEVEL,
                    "assets": assets,
                    "assets_total": {
                        "raw": sum(row["raw"] for row in assets),
                        "gzip": sum(row["gzip"] for row in assets),
                    },
                    "transfer": transfer,
                    "elapsed_s": round(elapsed_s),
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
