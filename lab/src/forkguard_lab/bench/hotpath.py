"""In-process benchmarks: the pool hot path, the fork check, and the first connection after fork.

How "guarded" and "unguarded" are interleaved: one process, one engine per backend, and
``forkguard.install()`` / ``forkguard.uninstall()`` between rounds. forkguard's listeners are
class-level pool listeners, which SQLAlchemy applies to existing pools at once, so the very same
pool (same connection, same server session) is measured in every configuration; each round runs
the configurations back to back in a rotating order, and a figure is the median over rounds
of the per-round ratio. (Two engines with ``forkguard.protect()`` on one would compare two
server sessions and two instance-level listener lists, i.e. not what ``install()`` users get.)

The bare checkout/checkin benchmark adds one more configuration, to split the cost:
``noop-checkout``, one do-nothing class-level ``checkout`` listener - the one pool event
forkguard's listeners see on every checkout (none runs on checkin). SQLAlchemy leaves its
checkout fast path as soon as *any* ``checkout`` listener exists, so ``noop-checkout -
unguarded`` is SQLAlchemy's price for any such listener, and ``forkguard - noop-checkout`` is
forkguard's own work (one byte read of a flag on the fork marker page; see
``forkguard.sqlalchemy._make_checkout_listener``).
"""

from __future__ import annotations

import gc
import logging
import os
import struct
import sys
import time
import timeit
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool

import forkguard
from forkguard.testing import fork_check, has_fork_marker

from .timing import median, paired_diffs, paired_ratios, rotation, summary

log = logging.getLogger("forkguard_lab.bench")

MYSQL_HOST = os.environ.get("FG_TEST_MYSQL", "127.0.0.1:3306")
PG_HOST = os.environ.get("FG_TEST_PG", "127.0.0.1:5432")
# C drivers: the cheaper the round trip, the more any per-checkout overhead shows.
BACKENDS = {
    "mariadb": f"mysql+mysqldb://root@{MYSQL_HOST}/test",
    "postgresql": f"postgresql+psycopg2://root@{PG_HOST}/test",
}
QUERY_CONFIGS = ("unguarded", "forkguard")
BARE_CONFIGS = ("unguarded", "noop-checkout", "forkguard")
FORK_VARIANTS = ("forkguard", "manual")


@dataclass
class HotPathConfig:
    # Many short rounds: the two sides of a pair run within ~40 ms of each other, so a change
    # in the (shared) machine's load hits both; the median over many pairs is what is left.
    rounds: int = 121
    query_iterations: int = 150
    bare_iterations: int = 2000
    fork_rounds: int = 20
    micro_number: int = 200000


def _noop_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    return None


def _noop_orm_execute(orm_execute_state: Any) -> None:
    return None


def _noop_reset(*args: Any) -> None:
    return None


# The do-nothing listeners, one per configuration that adds one: what any library listening to
# that event costs before its own first line runs (the floor under forkguard's listener).
NOOP_LISTENERS: dict[str, tuple[Any, str, Callable[..., None]]] = {
    "noop-checkout": (Pool, "checkout", _noop_checkout),
    "noop-orm": (Session, "do_orm_execute", _noop_orm_execute),
    "noop-reset": (Pool, "reset", _noop_reset),
}
# forkguard.install() as a user calls it (orm_fork_check off, the default), and with the opt-in
# per-statement fork check; passed explicitly, as settings outlive uninstall().
FORKGUARD_CONFIGS = {"forkguard": False, "forkguard-orm-check": True}


def _set_config(name: str) -> None:
    """Exactly one configuration's listeners on ``Pool`` and ``Session``."""
    forkguard.uninstall()
    for target, event_name, fn in NOOP_LISTENERS.values():
        if event.contains(target, event_name, fn):
            event.remove(target, event_name, fn)
    if name in FORKGUARD_CONFIGS:
        forkguard.install(orm_fork_check=FORKGUARD_CONFIGS[name])
    elif name in NOOP_LISTENERS:
        event.listen(*NOOP_LISTENERS[name])
    elif name != "unguarded":
        raise ValueError(f"unknown configuration {name!r}")


def _assert_config(engine: sa.engine.Engine, name: str) -> None:
    """The listeners really in effect are this configuration's, and no other's."""
    probe = Session()
    try:
        found = (
            bool(engine.pool.dispatch.checkout),
            bool(engine.pool.dispatch.reset),
            bool(probe.dispatch.do_orm_execute),
            forkguard.is_installed(),
        )
    finally:
        probe.close()
    wanted = (
        name in ("noop-checkout", *FORKGUARD_CONFIGS),
        name == "noop-reset",
        name in ("noop-orm", "forkguard-orm-check"),
        name in FORKGUARD_CONFIGS,
    )
    if found != wanted:
        raise RuntimeError(
            f"benchmark configuration {name!r} is not in effect: (checkout, reset, "
            f"do_orm_execute listeners, installed) = {found}, expected {wanted}"
        )


Sample = tuple[float, float]  # (wall ns per op, this thread's CPU ns per op)


def _query_round(engine: sa.engine.Engine, n: int) -> Sample:
    """ns per checkout + SELECT 1 + checkin, through Engine.connect()."""
    stmt = sa.text("SELECT 1")
    c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
    for _ in range(n):
        with engine.connect() as conn:
            conn.execute(stmt).scalar()
    return (time.perf_counter_ns() - t0) / n, (time.thread_time_ns() - c0) / n


def _bare_round(engine: sa.engine.Engine, n: int) -> Sample:
    """ns per pool checkout + checkin, no query (the engine has reset_on_return=None: no IO)."""
    pool = engine.pool
    c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
    for _ in range(n):
        pool.connect().close()
    return (time.perf_counter_ns() - t0) / n, (time.thread_time_ns() - c0) / n


def interleave(
    fn: Callable[[int], Sample],
    n: int,
    rounds: int,
    configs: Sequence[str],
    check: Callable[[str], None],
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per configuration, the wall and the CPU ns per op of every round.

    Each round runs every configuration back to back, in an order rotated every round; before
    each, ``check`` confirms the configuration's listeners are really in effect."""
    wall: dict[str, list[float]] = {c: [] for c in configs}
    cpu: dict[str, list[float]] = {c: [] for c in configs}
    try:
        for r in range(rounds):
            for name in rotation(configs, r):
                _set_config(name)
                check(name)
                fn(max(10, n // 20))  # warm up this configuration's code paths
                w, c = fn(n)
                wall[name].append(w)
                cpu[name].append(c)
    finally:
        _set_config("unguarded")
    return wall, cpu


def _interleave(
    engine: sa.engine.Engine,
    fn: Callable[[sa.engine.Engine, int], Sample],
    n: int,
    rounds: int,
    configs: Sequence[str],
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    return interleave(
        lambda k: fn(engine, k), n, rounds, configs, lambda name: _assert_config(engine, name)
    )


def _analyse(per_config: dict[str, list[float]]) -> dict[str, Any]:
    ug, fg = per_config["unguarded"], per_config["forkguard"]
    out: dict[str, Any] = {
        "ns": {name: summary(values) for name, values in per_config.items()},
        "raw_ns": per_config,
        "ratio_forkguard": summary(paired_ratios(fg, ug)),
        "added_ns": summary(paired_diffs(fg, ug)),
    }
    if "noop-checkout" in per_config:
        nc = per_config["noop-checkout"]
        out["split_ns"] = {
            "checkout_dispatch": summary(paired_diffs(nc, ug)),
            "forkguard_own": summary(paired_diffs(fg, nc)),
        }
    return out


_FORKGUARD_DIR = os.path.dirname(forkguard.__file__)


def _owner_of(path: str) -> str:
    if path == __file__:
        return "benchmark"  # the do-nothing listener
    if os.path.dirname(path) == _FORKGUARD_DIR:
        return "forkguard"  # the library's own modules (src/forkguard/*.py)
    return "sqlalchemy" if f"{os.sep}sqlalchemy{os.sep}" in path else "other"


def bytecodes_per_checkout(pool: Pool, config: str) -> dict[str, int]:
    """Python bytecodes one bare checkout + checkin runs, by file, under ``config``.

    Counted with an opcode trace of one ``pool.connect().close()`` after a few untraced ones:
    exact and the same on any machine, it shows *where* the added work runs (SQLAlchemy's
    pool and event modules, or forkguard's).
    """
    _set_config(config)
    try:
        for _ in range(3):
            pool.connect().close()
        counts: dict[str, int] = {}

        def trace(frame: Any, event_name: str, arg: Any) -> Any:
            frame.f_trace_opcodes = True
            if event_name == "opcode":
                name = frame.f_code.co_filename
                counts[name] = counts.get(name, 0) + 1
            return trace

        sys.settrace(trace)
        try:
            pool.connect().close()
        finally:
            sys.settrace(None)
    finally:
        _set_config("unguarded")
    by_owner = {"sqlalchemy": 0, "forkguard": 0, "benchmark": 0, "other": 0}
    for path, n in counts.items():
        by_owner[_owner_of(path)] += n
    by_owner["total"] = sum(counts.values())
    return by_owner


def _micro(number: int) -> dict[str, Any]:
    """What one fork check costs, next to the syscall it replaces."""
    _set_config("forkguard")
    try:
        check_ns = min(timeit.repeat(fork_check, number=number, repeat=5)) / number * 1e9
        getpid_ns = min(timeit.repeat(os.getpid, number=number, repeat=5)) / number * 1e9
        noop_ns = min(timeit.repeat(lambda: None, number=number, repeat=5)) / number * 1e9
    finally:
        _set_config("unguarded")
    return {
        "fork_check_ns": check_ns,
        "getpid_ns": getpid_ns,
        "python_call_ns": noop_ns,
        "wipeonfork_marker": has_fork_marker(),
    }


def run_hotpath(cfg: HotPathConfig, backends: Sequence[str]) -> dict[str, Any]:
    result: dict[str, Any] = {"config": vars(cfg).copy(), "query": {}, "bare": {}}
    for backend in backends:
        url = BACKENDS[backend]
        engine = sa.create_engine(url, pool_size=1, max_overflow=0)
        bare = sa.create_engine(url, pool_size=1, max_overflow=0, pool_reset_on_return=None)
        try:
            with engine.connect() as conn:
                server = str(conn.execute(sa.text("SELECT VERSION()")).scalar())
            log.info("hot path on %s (%s)", backend, server.split(",")[0][:40])
            # The target is on wall time (what a request waits); the client's CPU time is
            # shown next to it, as it is far less sensitive to the shared machine's load.
            wall, cpu = _interleave(
                engine, _query_round, cfg.query_iterations, cfg.rounds, QUERY_CONFIGS
            )
            q = _analyse(wall)
            q["cpu"] = _analyse(cpu)
            q["server_version"] = server
            q["url"] = engine.url.render_as_string(hide_password=True)
            result["query"][backend] = q
            # Pure CPU: measured in this thread's CPU time, so time spent descheduled on a
            # busy machine does not count (wall time is kept in "wall").
            wall, cpu = _interleave(
                bare, _bare_round, cfg.bare_iterations, cfg.rounds, BARE_CONFIGS
            )
            b = _analyse(cpu)
            b["wall"] = _analyse(wall)
            # noop-reset: what any ``reset`` listener adds to every checkin (counted, not timed).
            b["bytecodes"] = {
                c: bytecodes_per_checkout(bare.pool, c) for c in (*BARE_CONFIGS, "noop-reset")
            }
            result["bare"][backend] = b
        finally:
            _set_config("unguarded")
            engine.dispose()
            bare.dispose()
    result["micro"] = _micro(cfg.micro_number)
    return result


# ---- first working connection after fork ---------------------------------------------------


def _fork_once(engine: sa.engine.Engine, variant: str) -> float:
    """Seconds from ``os.fork()`` in the parent to the child's first ``SELECT 1`` answered.

    The parent holds one pooled (checked-in) connection, as a preloaded app does. In
    ``manual`` the child runs SQLAlchemy's recipe, ``engine.dispose(close=False)``, itself;
    in ``forkguard`` the child does nothing (forkguard's at-fork hook runs inside
    ``os.fork()``, which is why the clock starts in the parent).
    """
    # A fresh pooled connection each round; the manual recipe may have spoiled the last one
    # (mysqlclient's dealloc sends COM_QUIT over the shared socket - see the README).
    engine.dispose(close=False)
    gc.collect()
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1")).scalar()
    r, w = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(r)
            if variant == "manual":
                engine.dispose(close=False)
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1")).scalar()
            os.write(w, struct.pack("d", time.perf_counter() - t0))
            code = 0
        except BaseException:
            traceback.print_exc(file=sys.stderr)
        finally:
            os._exit(code)
    os.close(w)
    try:
        data = b""
        while len(data) < 8:
            chunk = os.read(r, 8 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    if len(data) < 8 or status != 0:
        raise RuntimeError(f"fork benchmark child {pid} ({variant}) failed: status {status}")
    return float(struct.unpack("d", data)[0])


def run_forkcost(cfg: HotPathConfig, backends: Sequence[str]) -> dict[str, Any]:
    gc.collect()
    result: dict[str, Any] = {"config": {"rounds": cfg.fork_rounds}, "backends": {}}
    for backend in backends:
        engine = sa.create_engine(BACKENDS[backend], pool_size=1, max_overflow=0)
        times: dict[str, list[float]] = {v: [] for v in FORK_VARIANTS}
        try:
            for r in range(cfg.fork_rounds):
                for variant in rotation(FORK_VARIANTS, r):
                    if variant == "forkguard":
                        forkguard.install()
                    else:
                        forkguard.uninstall()
                    times[variant].append(_fork_once(engine, variant) * 1000.0)
        finally:
            forkguard.uninstall()
            engine.dispose(close=False)
        ratios = paired_ratios(times["forkguard"], times["manual"])
        result["backends"][backend] = {
            "ms": {v: summary(t) for v, t in times.items()},
            "raw_ms": times,
            "ratio_forkguard": summary(ratios),
            "added_ms": median(paired_diffs(times["forkguard"], times["manual"])),
        }
    gc.collect()
    return result
