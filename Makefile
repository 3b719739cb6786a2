# Vigía: `make demo` runs the nightly flow on the demo data; `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Real QGIS for tests/test_layers_qgis.py (runs under Debian's /usr/bin/python3).
APT_TEST_PACKAGES := python3-qgis qgis-providers

.PHONY: demo test install install-test system-deps lint typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

## Debian packages the tests need (APT_TEST_PACKAGES), installed when missing.
system-deps:
	@if [ -n "$(APT_TEST_PACKAGES)" ]; then \
	  missing=$$(for p in $(APT_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  fi; \
	fi

demo: install
	$(BIN)/vigia demo

test: install-test system-deps
	$(BIN)/ruff check imagery flows tests benchmarks
	$(BIN)/ruff format --check imagery flows tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest

lint:
	$(BIN)/ruff check --fix imagery flows tests benchmarks
	$(BIN)/ruff format imagery flows tests benchmarks

clean:
	rm -rf $(VENV) output data/demo .pytest_cache .mypy_cache .ruff_cache
