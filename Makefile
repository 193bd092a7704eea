# Both set-up commands create .venv when missing and (re)install the project into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast bench lint typecheck install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The in-app side (instrument/, its own distribution) first, editable; then the observer,
# told to take that one rather than a copy (see setup.py).
$(STAMP): $(BIN)/python pyproject.toml setup.py instrument/pyproject.toml instrument/setup.py instrument/poolscope/instrument/_accel.c instrument/poolscope/instrument/_shortest.h
	$(BIN)/python -m pip install -q -e ./instrument
	POOLSCOPE_INSTRUMENT_REQ=poolscope-instrument $(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/poolscope demo

lint: $(STAMP)
	$(BIN)/ruff check instrument poolscope tests bench
	$(BIN)/ruff format --check instrument poolscope tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict

test: lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

# The quick subset for local runs: no PostgreSQL, servers or subprocesses.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m fast $(PYTEST_ARGS)

bench: $(STAMP)
	.ci/bench-deps
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
