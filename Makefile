# Everything a fresh machine needs comes from these targets: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup system-deps demo test lint typecheck pytest bench vectors clean

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

bench: setup
	$(PY) -m bench.bench_codes

vectors: setup
	$(PY) -m scripts.gen_vectors

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
