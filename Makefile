# Every target sets up what it needs on a fresh machine: the virtualenv, and (as root, e.g. in CI)
# the Debian server packages the tests run against.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONHASHSEED := 0

.PHONY: venv servers demo test test-fast lint bench bench-pit clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Server binaries the tests run against (Debian packages); installed only as root, and only
# when missing. Elsewhere those tests skip and say how to install (under CI=true they fail).
servers:
	@if [ "$$(id -u)" = 0 ] && ! command -v redis-server >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	fi
	@if [ "$$(id -u)" = 0 ] && ! command -v prometheus >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; \
	fi
	@# PostgreSQL (CDC source, MLflow/Optuna backend tests): Debian keeps initdb off PATH
	@if [ "$$(id -u)" = 0 ] && { ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		! ls /usr/lib/postgresql/*/lib/wal2json.so >/dev/null 2>&1; }; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql && \
		major=$$(ls /usr/lib/postgresql | sort -n | tail -1) && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-$$major-wal2json; \
	fi
	@if [ "$$(id -u)" = 0 ] && ! [ -x /usr/bin/chromium ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi
	@if [ "$$(id -u)" = 0 ] && ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; \
	fi
	@if [ "$$(id -u)" = 0 ] && ! command -v java >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless; \
	fi

# The demo's city starts at the same instant every run, so each run starts from an empty data dir.
demo: $(STAMP)
	rm -rf .dockline-demo
	$(BIN)/dockline --data-dir .dockline-demo demo

# --durations: the slowest tests in every run's log, to keep the suite inside its ~15 minutes.
test: $(STAMP) servers
	$(BIN)/python -m pytest -q --durations=15

test-fast: $(STAMP) servers
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP) servers
	@if [ "$$(id -u)" = 0 ] && ! command -v wrk >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; \
	fi
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_sim.py
	$(BIN)/python benchmarks/bench_log.py
	$(BIN)/python benchmarks/bench_online.py
	$(BIN)/python benchmarks/bench_materialize.py
	$(BIN)/python benchmarks/bench_ingest_online.py
	$(BIN)/python benchmarks/bench_kafka_log.py
	$(BIN)/python benchmarks/bench_serving.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_drift.py
	$(BIN)/python benchmarks/bench_ingest_start.py
	$(BIN)/python benchmarks/bench_served_consistency.py
	$(BIN)/python benchmarks/bench_tradeoffs.py
	$(BIN)/python benchmarks/bench_explain.py

# Installs Feast 0.67 in its own venv (benchmarks/.venv-feast) and takes several minutes.
bench-pit: $(STAMP)
	$(BIN)/python benchmarks/bench_pit.py

clean:
	rm -rf $(VENV) .dockline .dockline-demo .pytest_cache .mypy_cache .ruff_cache
