# Everything a fresh machine needs comes from these targets: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup system-deps bench-deps demo test lint typecheck pytest bench bench-charges vectors clean

setup: system-deps $(STAMP)

# pyzbar needs the zbar shared library; install it when we can (root) and it is missing.
system-deps:
	@if ! ldconfig -p 2>/dev/null | grep -q 'libzbar\.so\.0'; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing libzbar0 (apt-get)"; \
	    (apt-get install -y -q libzbar0 >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q libzbar0 >/dev/null)) || \
	    echo "warning: could not install libzbar0; the pyzbar backend will be unavailable"; \
	  else \
	    echo "warning: libzbar0 missing and not root; install it for the pyzbar backend"; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(PY) -m scripts.demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup
	$(PY) -m pytest

test: lint typecheck pytest

bench: setup bench-deps
	$(PY) -m bench.bench_codes
	$(PY) -m bench.bench_charges

# Charges over HTTP vs bare Flask and pgbench (BRIEF §8); e.g. `make bench-charges BENCH_ARGS=--quick`.
bench-charges: setup bench-deps
	$(PY) -m bench.bench_charges $(BENCH_ARGS)

# wrk drives the HTTP load of bench_charges; install it when we can (root) and it is missing.
bench-deps:
	@if ! command -v wrk >/dev/null; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing wrk (apt-get)"; \
	    (apt-get install -y -q wrk >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null)) || \
	    echo "warning: could not install wrk; bench_charges cannot run"; \
	  else \
	    echo "warning: wrk missing and not root; install it to run bench_charges"; \
	  fi; \
	fi

vectors: setup
	$(PY) -m scripts.gen_vectors

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
