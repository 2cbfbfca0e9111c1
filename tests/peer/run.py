"""Run SQLAlchemy's and Flask-SQLAlchemy's own tests twice: plain and with forkguard installed.

    .venv/bin/python tests/peer/run.py                  # every suite (what `make peer` runs)
    .venv/bin/python tests/peer/run.py --list           # the suite names
    .venv/bin/python tests/peer/run.py 'sa-sqlite-*'    # some of them (shell-style patterns)
    .venv/bin/python tests/peer/run.py sa-sqlite-test_pool -- -k queuepool_del   # extra pytest args

The sdists of the *installed* versions are downloaded once with pip into ``.peer/sdist`` and
their tests unpacked into ``.peer/src``. Each suite is one pytest process per run, in the
project's own directory with its own pytest configuration (SQLAlchemy's plugin, options and
warning filters), against the installed packages (``python -s`` keeps SQLAlchemy's conftest
from putting the sdist's ``lib/`` first). Both runs load ``forkguard_peer.py``; in the second
it calls ``forkguard.install()`` once at start-up, and registers forkguard's listeners again
whenever a test's teardown cleared them (``Pool.dispatch._clear()`` in test_pool), unless
``--no-rearm``. The MariaDB and PostgreSQL schemas SQLAlchemy's tests expect are made if missing.

The outcome of every test (passed, failed, error, skipped, xfailed) must be the same in both
runs; otherwise the differences are printed with their failure messages and the exit status
is 1. Tests that fail in both runs are listed as environment problems, without failing.
Logs and JUnit XML of every run are kept in ``.peer/results``.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = ROOT / ".peer"
SDISTS = CACHE / "sdist"
SOURCES = CACHE / "src"
RESULTS = CACHE / "results"

MYSQL_HOST = os.environ.get("FG_TEST_MYSQL", "127.0.0.1:3306")
PG_HOST = os.environ.get("FG_TEST_PG", "127.0.0.1:5432")
# --dburi for SQLAlchemy's plugin; the MySQL URL has the charset of SQLAlchemy's own setup.cfg.
BACKENDS = {
    "sqlite": "sqlite://",
    "mariadb": f"mysql+pymysql://root@{MYSQL_HOST}/test?charset=utf8mb4",
    "postgresql": f"postgresql+psycopg2://root@{PG_HOST}/test",
}
SA_MODULES = {
    "test_pool": "test/engine/test_pool.py",
    "test_reconnect": "test/engine/test_reconnect.py",
    "test_execute": "test/engine/test_execute.py",
    "test_session": "test/orm/test_session.py",
    "test_transaction": "test/orm/test_transaction.py",
}
# What each backend runs, with extra pytest args. test_pool's timing-intensive tests (threads
# and sleeps on a mock DB-API: ~22 of its ~26 s) run on sqlite only.
QUICK = ["--notimingintensive"]
SA_PLAN: dict[str, dict[str, list[str]]] = {
    "sqlite": {module: [] for module in SA_MODULES},
    "mariadb": {**{module: [] for module in SA_MODULES}, "test_pool": QUICK},
    "postgresql": {**{module: [] for module in SA_MODULES}, "test_pool": QUICK},
}
# The schemas SQLAlchemy's schema-translate tests use (README.unittests.rst, "Setting Up
# Databases"); their names are SQLAlchemy's, so the ones made here are dropped afterwards.
SA_SCHEMA_NAMES = ("test_schema", "test_schema_2")
SA_SCHEMA_SQL = {
    "mariadb": (
        "SELECT 1 FROM information_schema.schemata WHERE schema_name = '{name}'",
        "CREATE DATABASE {name} CHARACTER SET utf8mb4",
        "DROP DATABASE IF EXISTS {name}",
    ),
    "postgresql": (
        "SELECT 1 FROM information_schema.schemata WHERE schema_name = '{name}'",
        "CREATE SCHEMA {name}",
        "DROP SCHEMA IF EXISTS {name} CASCADE",
    ),
}


@dataclass
class Project:
    dist: str  # the distribution name pip knows
    keep: tuple[str, ...]  # prefixes of the sdist's paths to unpack; () for everything

    @property
    def version(self) -> str:
        return importlib.metadata.version(self.dist)

    @property
    def stem(self) -> str:
        return f"{self.dist.lower().replace('-', '_')}-{self.version}"


SQLALCHEMY = Project(
    "SQLAlchemy",
    keep=(
        "test/",
        "lib/sqlalchemy/testing/plugin/",  # test/conftest.py bootstraps the plugin from here
        "setup.cfg",
        "pyproject.toml",
        "README.unittests.rst",
    ),
)
FLASK_SQLALCHEMY = Project("Flask-SQLAlchemy", keep=())


@dataclass
class Suite:
    name: str
    project: Project
    args: list[str]
    backend: str | None = None


def suites() -> list[Suite]:
    found = []
    for backend, modules in SA_PLAN.items():
        for module, extra in modules.items():
            args = [f"--dburi={BACKENDS[backend]}", *extra, SA_MODULES[module]]
            found.append(Suite(f"sa-{backend}-{module}", SQLALCHEMY, args, backend))
    found.append(Suite("flask-sqlalchemy", FLASK_SQLALCHEMY, ["tests"]))
    return found


def _on(backend: str, statements: list[str]) -> list[Any]:
    """Run ``statements`` in one transaction; each one's first row (None: no rows)."""
    import sqlalchemy as sa

    engine = sa.create_engine(BACKENDS[backend], poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            results = [conn.execute(sa.text(statement)) for statement in statements]
            return [r.first() if r.returns_rows else None for r in results]
    finally:
        engine.dispose()


def prepare(backend: str) -> list[str]:
    """Make the schemas SQLAlchemy's tests expect on this backend; returns the ones made."""
    exists, create, _ = SA_SCHEMA_SQL[backend]
    found = _on(backend, [exists.format(name=name) for name in SA_SCHEMA_NAMES])
    made = [name for name, row in zip(SA_SCHEMA_NAMES, found) if row is None]
    _on(backend, [create.format(name=name) for name in made])
    return made


def drop_made(backend: str, made: list[str]) -> None:
    """Drop the schemas :func:`prepare` made, so the shared servers are left as found."""
    _on(backend, [SA_SCHEMA_SQL[backend][2].format(name=name) for name in made])


# ---- sdists ------------------------------------------------------------------------------------


def sdist(project: Project) -> Path:
    """The project's sdist for the installed version, downloaded with pip the first time."""
    SDISTS.mkdir(parents=True, exist_ok=True)
    for path in SDISTS.iterdir():
        if path.name.lower() == f"{project.stem.lower()}.tar.gz":
            return path
    print(f"peer: downloading the sdist of {project.dist}=={project.version}", flush=True)
    # --no-binary for this package only: build requirements still come as wheels.
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(SDISTS)]
    pip += ["--no-binary", project.dist, f"{project.dist}=={project.version}"]
    subprocess.run(pip, check=True)
    return sdist(project)


def unpacked(project: Project) -> Path:
    """The sdist's files (those in ``project.keep``) under .peer/src/NAME-VERSION."""
    target = SOURCES / project.stem
    if target.is_dir():
        return target
    archive = sdist(project)
    partial = SOURCES / f".{project.stem}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            top, _, rel = member.name.partition("/")
            if not project.keep or rel.startswith(project.keep):
                members.append(member)
        tar.extractall(partial, members=members, filter="data")
    (partial / top).rename(target)
    partial.rmdir()
    return target


# ---- one run -----------------------------------------------------------------------------------

OUTCOME_ORDER = ("error", "failed", "xfailed", "skipped", "passed")


@dataclass
class Run:
    mode: str
    returncode: int
    seconds: float
    log: Path
    outcomes: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    listeners: dict[str, object] | None = None

    def counts(self) -> str:
        tally = {name: 0 for name in OUTCOME_ORDER}
        for outcome in self.outcomes.values():
            tally[outcome] += 1
        return " ".join(f"{n} {name}" for name, n in tally.items() if n) or "no tests"


def _message(element: ET.Element) -> str:
    """The failure's message, and where in the traceback it was raised."""
    head = (element.get("message") or "").strip().splitlines()[:4]
    lines = [line for line in (element.text or "").rstrip().splitlines() if line.strip()]
    raised = len(lines)
    if head and head[0] in lines:  # the traceback's last lines repeat the message
        raised = len(lines) - 1 - lines[::-1].index(head[0])
    return "\n".join(lines[max(0, raised - 4) : raised] + head)


def read_junit(path: Path, run: Run) -> None:
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("error", "failure"):
                outcome, message = ("error" if child.tag == "error" else "failed"), _message(child)
            elif child.tag == "skipped" and outcome == "passed":
                xfail = child.get("type") == "pytest.xfail"
                outcome, message = ("xfailed" if xfail else "skipped"), child.get("message", "")
        previous = run.outcomes.get(test_id)
        if previous is None or OUTCOME_ORDER.index(outcome) < OUTCOME_ORDER.index(previous):
            run.outcomes[test_id] = outcome
            run.messages[test_id] = message


def run_suite(suite: Suite, mode: str, extra: list[str], rearm: bool) -> Run:
    RESULTS.mkdir(parents=True, exist_ok=True)
    base = RESULTS / f"{suite.name}.{mode}"
    junit, log, report = (base.with_suffix(base.suffix + ext) for ext in (".xml", ".log", ".json"))
    for stale in (junit, report):
        stale.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["FORKGUARD_PEER_INSTALL"] = "1" if mode == "forkguard" else "0"
    env["FORKGUARD_PEER_REARM"] = "1" if rearm else "0"
    env["FORKGUARD_PEER_REPORT"] = str(report)
    env["FORKGUARD_PEER_SOURCES"] = str(SOURCES)
    cmd = [sys.executable, "-s", "-m", "pytest", "-p", "no:cacheprovider", "-p", "forkguard_peer"]
    cmd += [f"--junitxml={junit}", *suite.args, *extra]
    cwd = unpacked(suite.project)
    started = time.monotonic()
    with log.open("w") as out:
        out.write(f"$ cd {cwd} && {' '.join(cmd)}\n\n")
        out.flush()
        returncode = subprocess.run(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    run = Run(mode, returncode, time.monotonic() - started, log)
    if junit.exists():
        read_junit(junit, run)
    if report.exists():
        run.listeners = json.loads(report.read_text())
    return run


# ---- comparing ---------------------------------------------------------------------------------


@dataclass
class Result:
    suite: Suite
    plain: Run
    guarded: Run
    may_be_empty: bool = False  # extra pytest args (-k ...) may select nothing from a suite

    def broken(self) -> list[Run]:
        """Runs that did not get as far as running the tests (pytest 0 and 1 are both fine)."""
        return [run for run in (self.plain, self.guarded) if self._broke(run)]

    def _broke(self, run: Run) -> bool:
        if run.returncode == 5 and self.may_be_empty:  # pytest: no tests selected
            return False
        return run.returncode not in (0, 1) or not run.outcomes

    def differences(self) -> list[str]:
        ids = set(self.plain.outcomes) | set(self.guarded.outcomes)
        return sorted(i for i in ids if self.plain.outcomes.get(i) != self.guarded.outcomes.get(i))

    def passed_in_both(self) -> int:
        return sum(
            1
            for test_id, outcome in self.plain.outcomes.items()
            if outcome == "passed" and self.guarded.outcomes.get(test_id) == "passed"
        )

    def failing_in_both(self) -> list[str]:
        bad = ("failed", "error")
        return sorted(
            i
            for i, outcome in self.plain.outcomes.items()
            if outcome in bad and self.guarded.outcomes.get(i) in bad
        )


def indent(text: str, prefix: str = "        ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def report(results: list[Result]) -> int:
    status = 0
    print("\npeer: summary (outcomes plain | with forkguard; seconds per run)")
    for r in results:
        same = "same" if not r.differences() and not r.broken() else "DIFFERENT"
        print(
            f"  {r.suite.name:32} {r.plain.seconds:6.1f}s {r.guarded.seconds:6.1f}s  {same:9}  "
            f"{r.plain.counts()} | {r.guarded.counts()}"
        )
    total = sum(r.plain.seconds + r.guarded.seconds for r in results)
    print(f"  total {total:.0f}s")

    for r in results:
        for run in r.broken():
            status = 1
            print(f"\npeer: {r.suite.name} ({run.mode}): pytest exited {run.returncode}")
            print(f"    see {run.log.relative_to(ROOT)}")

    differing = [(r, test_id) for r in results for test_id in r.differences()]
    if differing:
        status = 1
        print(f"\npeer: FAILED: {len(differing)} test(s) end differently with forkguard installed:")
        for r, test_id in differing:
            plain = r.plain.outcomes.get(test_id, "not run")
            guarded = r.guarded.outcomes.get(test_id, "not run")
            print(f"\n  {r.suite.name}: {test_id}\n    plain: {plain}, with forkguard: {guarded}")
            message = r.guarded.messages.get(test_id) or r.plain.messages.get(test_id)
            if message:
                print(indent(message))
    else:
        print("\npeer: every test ends the same with forkguard installed")

    in_both = [(r, test_id) for r in results for test_id in r.failing_in_both()]
    if in_both:
        print(f"\npeer: {len(in_both)} test(s) fail without forkguard too (not counted):")
        by_cause: dict[tuple[str, str], list[str]] = {}
        for r, test_id in in_both:
            cause = (r.plain.messages.get(test_id) or "?").splitlines()[-1][:160]
            by_cause.setdefault((r.suite.name, cause), []).append(test_id)
        for (name, cause), ids in by_cause.items():
            print(f"  {name}: {len(ids)} x {cause}")
            for test_id in ids[:3]:
                print(f"      {test_id}")
            if len(ids) > 3:
                print(f"      ... and {len(ids) - 3} more")

    print("\npeer: forkguard's class-level listeners that a suite's teardown removed:")
    for r in results:
        info = r.guarded.listeners
        if info is None:
            print(f"  {r.suite.name}: no report (see {r.guarded.log.relative_to(ROOT)})")
        elif info.get("note"):
            print(f"  {r.suite.name}: {info['note']}")
        elif info["removed_after"]:
            if info["rearm"]:
                done = f"registered again before {info['rearmed']} of {info['tests_checked']} tests"
            else:
                done = (
                    f"{info['tests_started_without_all']} of {info['tests_checked']} tests "
                    "started without all of them (--no-rearm)"
                )
            print(f"  {r.suite.name}: {done}")
            for listener, test in info["removed_after"].items():
                print(f"    {listener}: gone after {test}")
    if not any(r.guarded.listeners and r.guarded.listeners["removed_after"] for r in results):
        print("  none")

    compared = sum(len(set(r.plain.outcomes) | set(r.guarded.outcomes)) for r in results)
    passed = sum(r.passed_in_both() for r in results)
    others = compared - passed - len(differing) - len(in_both)
    print(
        f"\npeer: {compared} tests compared: {passed} passed in both runs, {len(differing)} "
        f"ended differently, {len(in_both)} failed in both, {others} skipped in both"
    )
    # The closing line, in pytest's words: failed = ended differently, or a run broke.
    failed = len(differing) + sum(len(r.broken()) for r in results)
    print(f"peer: {passed} passed, {failed} failed, {compared - passed - len(differing)} skipped")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", help="suite names or shell-style patterns")
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    parser.add_argument(
        "--no-rearm",
        dest="rearm",
        action="store_false",
        help="do not register forkguard's listeners again after a test's teardown cleared them",
    )
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:  # the rest goes to pytest
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = parser.parse_args(argv)
    chosen = [
        s
        for s in suites()
        if not args.patterns or any(fnmatch.fnmatchcase(s.name, p) for p in args.patterns)
    ]
    if args.list or not chosen:
        for s in suites():
            print(s.name)
        return 0 if args.list else 2

    print(
        f"peer: SQLAlchemy {SQLALCHEMY.version}, Flask-SQLAlchemy {FLASK_SQLALCHEMY.version}; "
        f"{len(chosen)} suite(s), each plain then with forkguard installed",
        flush=True,
    )
    backends = sorted({s.backend for s in chosen if s.backend in SA_SCHEMA_SQL})
    made = {backend: prepare(backend) for backend in backends}
    results = []
    try:
        for suite in chosen:
            plain = run_suite(suite, "plain", extra, args.rearm)
            guarded = run_suite(suite, "forkguard", extra, args.rearm)
            result = Result(suite, plain, guarded, may_be_empty=bool(extra))
            mark = "same" if not result.differences() and not result.broken() else "DIFFERENT"
            print(
                f"  {suite.name:32} {plain.seconds:6.1f}s {guarded.seconds:6.1f}s  {mark}",
                flush=True,
            )
            results.append(result)
    finally:
        for backend, names in made.items():
            drop_made(backend, names)
    return report(results)


if __name__ == "__main__":
    sys.exit(main())
