# Two commands set up everything on a fresh machine:
#   make demo   - runs `forkguard lab --quick` (the seed's app under real pre-fork servers)
#   make test   - runs the whole test suite against the local MariaDB and PostgreSQL
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint typecheck check bench services clean

$(STAMP): pyproject.toml scripts/system-deps.sh
	./scripts/system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/forkguard lab --quick

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test

bench: $(STAMP)
	$(PY) -m forkguard.bench

services:
	./scripts/start-services.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
