# Two commands set up everything on a fresh machine:
#   make demo   - runs `forkguard lab --quick` (the reported app under real pre-fork servers)
#   make test   - runs the whole test suite against the local MariaDB and PostgreSQL, then
#                 `make peer`: SQLAlchemy's and Flask-SQLAlchemy's own tests with forkguard installed
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The core is also tested against SQLAlchemy 1.4, in a venv of its own.
SA14   ?= .venv-sa14
SA14_STAMP := $(SA14)/.installed
CORE_TESTS := tests -m "not slow" --ignore=tests/lab --ignore=tests/doctor \
	--ignore=tests/integrations --ignore=tests/bench --ignore=tests/faults \
	--ignore=tests/test_distribution.py

.PHONY: venv demo test test-sa14 test-faults peer lint typecheck check bench docs lab-docs services clean

$(STAMP): pyproject.toml lab/pyproject.toml scripts/system-deps.sh
	./scripts/system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' -e ./lab
	touch $(STAMP)

$(SA14_STAMP): pyproject.toml $(STAMP)
	test -x $(SA14)/bin/python || $(PYTHON) -m venv $(SA14)
	$(SA14)/bin/python -m pip install -q --upgrade pip
	$(SA14)/bin/python -m pip install -q 'SQLAlchemy[asyncio]>=1.4.33,<2' PyMySQL mysqlclient \
		psycopg2-binary mysql-connector-python pytest
	$(SA14)/bin/python -m pip install -q --no-deps -e .
	touch $(SA14_STAMP)

venv: $(STAMP) $(SA14_STAMP)

demo: $(STAMP)
	$(VENV)/bin/forkguard lab --quick --clients

test: $(STAMP) $(SA14_STAMP)
	FORKGUARD_NO_SKIP=1 $(PY) -m pytest $(PYTEST_ARGS)
	$(SA14)/bin/python -m pytest -q -p no:cacheprovider $(CORE_TESTS)
	$(PY) tests/peer/run.py

test-sa14: $(SA14_STAMP)
	$(SA14)/bin/python -m pytest -q -p no:cacheprovider $(CORE_TESTS)

test-faults: $(STAMP)
	FG_RELIABILITY_REPORT=docs/reliability.md $(PY) -m pytest tests/faults -p no:cacheprovider

# SQLAlchemy's own tests (engine: pool, reconnect, execute; orm: session, transaction) on sqlite,
# MariaDB and PostgreSQL, and Flask-SQLAlchemy's, from the sdists of the installed versions
# (cached in .peer/), each run plain and with forkguard installed: every test must end the same.
# PEER_ARGS picks suites and passes pytest args, e.g. PEER_ARGS="sa-sqlite-test_pool -- -x".
peer: $(STAMP)
	$(PY) tests/peer/run.py $(PEER_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src lab/src tests
	$(VENV)/bin/ruff format --check src lab/src tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test

# The full benchmark; the pre-fork part runs BENCH_RUNS times and the throughput target is on
# the pooled median of 3. Writes bench-results/ and the docs: docs/benchmarks.md, docs/memory.md,
# docs/img/, docs/data/results.json (the run, committed) and README.md's bench block.
BENCH_RUNS ?= 3
bench: $(STAMP)
	$(PY) -m forkguard_lab.bench --runs $(BENCH_RUNS) $(BENCH_ARGS)

# Every published figure again from the committed run (docs/data/results.json), measuring nothing.
docs: $(STAMP)
	$(PY) -m forkguard_lab.bench --from-json docs/data/results.json --docs docs --readme README.md

# The full lab matrix, then docs/lab.md and README.md's lab block from that run, each naming the
# commit it ran on. A 1300 s budget lets each of the 72 cells finish its requests on a 2-core
# machine (the default 600 s cuts most of them short, and the page marks each one that was).
LAB_ARGS ?= --budget 1300
lab-docs: $(STAMP)
	$(VENV)/bin/forkguard lab --out lab-results --docs docs/lab.md --readme README.md $(LAB_ARGS)

services:
	./scripts/start-services.sh

clean:
	rm -rf $(VENV) $(SA14) .pytest_cache .mypy_cache .ruff_cache .peer
