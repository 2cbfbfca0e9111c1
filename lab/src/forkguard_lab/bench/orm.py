"""The ORM path: ``Session.execute(select(Model).where(Model.id == 1))``, interleaved like the
pool hot path (:mod:`.hotpath`: one process, ``install()`` / ``uninstall()`` between rounds,
paired per-round ratios).

Configurations, toggled between rounds on the very same engines and tables:

* ``unguarded`` - no forkguard;
* ``forkguard`` - ``forkguard.install()`` as a user calls it: no per-statement listener
  (``orm_fork_check`` is off by default), so a statement in a session that already holds its
  connection passes through none of forkguard's code;
* ``noop-orm`` - one do-nothing ``Session`` ``do_orm_execute`` listener: SQLAlchemy builds an
  ``ORMExecuteState`` for every statement once any such listener exists, so this is the floor
  any per-statement listener costs before its own first line;
* ``forkguard-orm-check`` - ``forkguard.install(orm_fork_check=True)``: that floor plus
  forkguard's fork check.

Cases: sqlite in-process (CPU: this thread's CPU time), one statement per op in an open session
and one session per op (checkout, ``after_begin``, statement, close); MariaDB and PostgreSQL
(wall time: the round trip a request waits, client CPU beside it), one statement per op; and a
Flask-SQLAlchemy request through the app's test client (one request doing one ORM query, on
sqlite, CPU time).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from .hotpath import BACKENDS, Sample, _assert_config, interleave
from .timing import paired_diffs, paired_ratios, summary

log = logging.getLogger("forkguard_lab.bench")

ORM_CONFIGS = ("unguarded", "forkguard", "noop-orm", "forkguard-orm-check")
# The case the target is on (ORM execute, CPU, in-process, sqlite).
TARGET_CASE = "sqlite-statement"
CASES = ("sqlite-statement", "sqlite-session", "mariadb", "postgresql", "flask")


@dataclass
class OrmConfig:
    rounds: int = 121
    statement_iterations: int = 300  # ~30 us of CPU each on sqlite
    session_iterations: int = 150
    server_iterations: int = 80  # a round trip each
    flask_iterations: int = 100


def model_for(table: str) -> Any:
    """A mapped ``id``/``name`` class on ``table`` (a registry of its own, so several coexist)."""

    class Base(DeclarativeBase):
        pass

    class BenchUser(Base):
        __tablename__ = table
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(sa.String(100))

    return BenchUser


def _sample(t0: int, c0: int, n: int) -> Sample:
    return (time.perf_counter_ns() - t0) / n, (time.thread_time_ns() - c0) / n


def statement_op(engine: sa.engine.Engine, model: Any) -> Callable[[int], Sample]:
    """n x ``session.execute(select(Model).where(Model.id == 1))`` in one open session (its
    begin - checkout, ``after_begin`` - happens before the clock starts)."""
    stmt = sa.select(model).where(model.id == 1)

    def run(n: int) -> Sample:
        with Session(engine) as session:
            session.execute(stmt).scalar_one()
            c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
            for _ in range(n):
                session.execute(stmt).scalar_one()
            return _sample(t0, c0, n)

    return run


def session_op(engine: sa.engine.Engine, model: Any) -> Callable[[int], Sample]:
    """n x (new ``Session``, the same statement, close): a unit of work, checkout included."""
    stmt = sa.select(model).where(model.id == 1)

    def run(n: int) -> Sample:
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        for _ in range(n):
            with Session(engine) as session:
                session.execute(stmt).scalar_one()
        return _sample(t0, c0, n)

    return run


def flask_op(url: str, model: Any) -> tuple[Callable[[int], Sample], sa.engine.Engine]:
    """n x ``client.get('/user/1')``: a Flask-SQLAlchemy view doing one ORM query."""
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    app = Flask("fg_bench_orm")
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    db = SQLAlchemy(app)

    @app.get("/user/<int:uid>")
    def user(uid: int) -> dict[str, Any]:
        row = db.session.execute(sa.select(model).where(model.id == uid)).scalar_one()
        return {"id": row.id, "name": row.name}

    client = app.test_client()
    with app.app_context():
        engine: sa.engine.Engine = db.engine

    def run(n: int) -> Sample:
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        for _ in range(n):
            resp = client.get("/user/1")
        sample = _sample(t0, c0, n)
        if resp.status_code != 200:
            raise RuntimeError(f"flask ORM request failed: {resp.status_code} {resp.data[:200]!r}")
        return sample

    return run, engine


def analyse(per_config: dict[str, list[float]]) -> dict[str, Any]:
    """Per configuration: ns per op; against unguarded: paired ratios and ns added; and what
    forkguard's opt-in check adds on top of the do-nothing listener (its own code)."""
    ug = per_config["unguarded"]
    others = [c for c in per_config if c != "unguarded"]
    return {
        "ns": {c: summary(v) for c, v in per_config.items()},
        "raw_ns": per_config,
        "ratio": {c: summary(paired_ratios(per_config[c], ug)) for c in others},
        "added_ns": {c: summary(paired_diffs(per_config[c], ug)) for c in others},
        "orm_check_own_ns": summary(
            paired_diffs(per_config["forkguard-orm-check"], per_config["noop-orm"])
        ),
    }


def _measure(
    name: str,
    url: str,
    clock: str,
    op: Callable[[int], Sample],
    engine: sa.engine.Engine,
    n: int,
    rounds: int,
) -> dict[str, Any]:
    log.info("ORM path: %s", name)
    wall, cpu = interleave(op, n, rounds, ORM_CONFIGS, lambda c: _assert_config(engine, c))
    return {
        "iterations": n,
        "clock": clock,
        "backend": sa.engine.make_url(url).get_backend_name(),
        "driver": sa.engine.make_url(url).get_driver_name(),
        "wall": analyse(wall),
        "cpu": analyse(cpu),
    }


@contextmanager
def _table(url: str) -> Iterator[tuple[sa.engine.Engine, Any]]:
    """An engine and a fresh ``fg_bench_orm_*`` table holding row 1; dropped afterwards."""
    model = model_for(f"fg_bench_orm_{uuid.uuid4().hex[:8]}")
    engine = sa.create_engine(url, pool_size=1, max_overflow=0)
    try:
        model.metadata.create_all(engine)
        with Session(engine) as session, session.begin():
            session.add(model(id=1, name="fg-bench"))
        yield engine, model
    finally:
        try:
            model.metadata.drop_all(engine)
        finally:
            engine.dispose()


def run_orm(cfg: OrmConfig, backends: Sequence[str]) -> dict[str, Any]:
    cases: dict[str, Any] = {}
    tmp = tempfile.mkdtemp(prefix="fg_bench_orm_")
    sqlite_url = f"sqlite:///{os.path.join(tmp, 'fg_bench.sqlite')}"
    try:
        with _table(sqlite_url) as (engine, model):
            rounds = cfg.rounds
            cases["sqlite-statement"] = _measure(
                "sqlite, statement",
                sqlite_url,
                "cpu",
                statement_op(engine, model),
                engine,
                cfg.statement_iterations,
                rounds,
            )
            cases["sqlite-session"] = _measure(
                "sqlite, session",
                sqlite_url,
                "cpu",
                session_op(engine, model),
                engine,
                cfg.session_iterations,
                rounds,
            )
            flask_run, flask_engine = flask_op(sqlite_url, model)
            try:
                cases["flask"] = _measure(
                    "Flask-SQLAlchemy request",
                    sqlite_url,
                    "cpu",
                    flask_run,
                    flask_engine,
                    cfg.flask_iterations,
                    rounds,
                )
            finally:
                flask_engine.dispose()
        for backend in backends:
            url = BACKENDS[backend]
            with _table(url) as (engine, model):
                cases[backend] = _measure(
                    backend,
                    url,
                    "wall",
                    statement_op(engine, model),
                    engine,
                    cfg.server_iterations,
                    cfg.rounds,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"config": vars(cfg).copy(), "configs": list(ORM_CONFIGS), "cases": cases}
