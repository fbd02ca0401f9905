# Everything a fresh machine needs comes from these targets: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup bytecode system-deps bench-deps webwallet jstest demo test lint typecheck pytest reliability bench bench-quick bench-charges bench-scanner bench-pos vectors clean

setup: system-deps $(STAMP)

# Debian packages pip cannot provide: libzbar0 (the pyzbar backend), xvfb (the POS window test
# runs under a virtual display), xdotool (presses the cashier's keys in that window), chromium
# (the browser tests of the dashboard and the web wallet) and fonts-wqy-microhei (a 1.6 MB
# Chinese, Japanese and Korean font: `paycode-pos poster` prints merchant names in their own
# script with it). Installed when we can (root with apt-get) and missing.
CJK_FONT := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
system-deps:
	@if ! ldconfig -p 2>/dev/null | grep -q 'libzbar\.so\.0'; then $(call apt_install,libzbar0); fi
	@if ! command -v xvfb-run >/dev/null; then $(call apt_install,xvfb); fi
	@if ! command -v xdotool >/dev/null; then $(call apt_install,xdotool); fi
	@if ! [ -x /usr/bin/chromium ]; then $(call apt_install,chromium); fi
	@if ! [ -f $(CJK_FONT) ]; then $(call apt_install,fonts-wqy-microhei); fi

define apt_install
if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
  echo "installing $(1) (apt-get)"; \
  (apt-get install -y -q $(1) >/dev/null 2>&1 || \
   (apt-get update -q >/dev/null && apt-get install -y -q $(1) >/dev/null)) || \
  echo "warning: could not install $(1)"; \
else \
  echo "warning: $(1) is missing and this is not root: install it with apt-get"; \
fi
endef

# uv installs the same requirements as pip in about a quarter of the time (a fresh clone's
# `make test` pays this once); pip does it when uv cannot be had or fails. Both compile bytecode
# at install: where PYTHONDONTWRITEBYTECODE is set (this machine sets it), nothing is compiled
# later and every process the tests start would compile Flask and SQLAlchemy from source.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv
	@# opencv-python and the opencv-contrib-python the till now needs both own cv2/: drop the old one
	-$(PY) -m pip uninstall -q -y opencv-python opencv-python-headless 2>/dev/null
	$(PY) -m uv pip install -q --compile-bytecode --python $(PY) -e '.[dev]' || \
	  $(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Our own modules, compiled once for the same reason (stale files are recompiled by mtime).
SOURCES := appkit client merchant_pos server shared
bytecode: setup
	$(PY) -m compileall -q -j 0 $(SOURCES)

# The web wallet (webwallet/): npm installs the locked packages once, esbuild bundles the app
# into the server's package data (paycode/server/wallet_app/), served at /wallet/.
NPM_STAMP := webwallet/node_modules/.installed
$(NPM_STAMP): webwallet/package.json webwallet/package-lock.json
	@command -v node >/dev/null || { echo "error: Node.js 20 or newer is needed for the web wallet (apt-get install nodejs npm)"; exit 1; }
	cd webwallet && npm ci --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

webwallet: $(NPM_STAMP)
	node webwallet/build.mjs

# The JavaScript protocol core against tests/vectors/, with Node's own test runner.
jstest: $(NPM_STAMP)
	cd webwallet && node --test --test-reporter=dot test/

demo: bytecode webwallet
	$(PY) -m scripts.demo

# ruff, then the import contracts of pyproject.toml: the apps are peers over appkit over the
# pure core (README, "Layout").
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: setup
	$(VENV)/bin/mypy

# pytest rewrites the asserts of every test module at collection and keeps the result as
# bytecode, unless PYTHONDONTWRITEBYTECODE is set (this machine sets it): then it redoes it every
# run, about 3.5 s of a 7 s collection. The tests write bytecode (git ignores it).
# Two processes: a test spends much of its time waiting on a server, PostgreSQL, a browser or
# a till process, so a second one uses the other core (the suite: 10 min alone, 5.4 in two).
# By file: a module's tests run in one process, in order (module-scoped servers start once;
# some modules check what their earlier tests printed).
PYTEST_WORKERS ?= 2
pytest: bytecode webwallet
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile

test: lint typecheck jstest pytest

# The reliability and security suite at full scale (tests/reliability; `make test` runs it short),
# then docs/reliability.md from the figures every test recorded. Fails if any test failed.
reliability: setup
	rm -rf build/reliability
	PAYCODE_RELIABILITY=full CI=true $(PY) -m pytest tests/reliability -p no:cacheprovider; \
	status=$$?; $(PY) -m tests.reliability.report; exit $$status

# Every benchmark, then docs/benchmarks.md and docs/bench/*.png (bench/suite.py): the full run
# takes about 21 minutes (20.9 measured), `make bench-quick` (or `make bench QUICK=1`) under 3.
bench: setup bench-deps
	$(PY) -m bench.suite $(if $(QUICK),--quick)

bench-quick: setup bench-deps
	$(PY) -m bench.suite --quick

# The charge targets (docs/bars.md): charges/s vs bare Flask and pgbench, open-loop latency,
# and a per-charge profile; e.g. `make bench-charges BENCH_ARGS=--quick`.
bench-charges: setup bench-deps
	$(PY) -m bench.bench_charges $(BENCH_ARGS)

# wrk drives the HTTP load of bench_charges; install it when we can (root) and it is missing.
bench-deps:
	@if ! command -v wrk >/dev/null; then $(call apt_install,wrk); fi

vectors: setup
	$(PY) -m scripts.gen_vectors
	$(PY) -m scripts.gen_qr_vectors
	$(PY) -m scripts.gen_offline_vectors
	$(PY) -m scripts.gen_checkout_vectors
	$(PY) -m scripts.gen_mandate_vectors

clean:
	rm -rf $(VENV) build webwallet/node_modules server/paycode/server/wallet_app *.egg-info .mypy_cache .pytest_cache .ruff_cache

# POS scanner ms per 720p frame and read rate vs each decoder (docs/bars.md); writes docs/scanner.md.
# e.g. `make bench-scanner BENCH_ARGS=--quick`.
bench-scanner: setup
	$(PY) -m bench.bench_scanner $(BENCH_ARGS)

# Scan to answer: first frame showing a code -> the server's answer, over loopback (docs/pos.md).
bench-pos: setup
	$(PY) -m bench.bench_pos $(BENCH_ARGS)
