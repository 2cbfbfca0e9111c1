"""Preload vs lazy under real uWSGI and gunicorn: memory, start-up, respawn and throughput.

One run = one server, one worker count, one variant, with :mod:`.memapp`:

* ``lazy`` - uWSGI ``--lazy-apps`` / gunicorn without ``--preload`` (every worker imports the
  app and builds its own working set; no forkguard - the usual answer to the fork problem);
* ``forkguard`` - preloaded, ``forkguard.install()``;
* ``forkguard-freeze`` - preloaded, ``forkguard.install()`` with ``FORKGUARD_FREEZE_GC=1``.

The three variants of one (server, worker count) run side by side. Phases, in order: start each
server (time until every worker has answered) and measure its memory at ready; a bounded load
(the lab's load client: echo / read / write through the database), interleaved between the
three servers in rotating rounds; memory after load; one full ``gc.collect()`` in every worker;
memory after that; each server loaded alone until copy-on-write has settled (its workers take
at most ``settle_faults_per_request`` minor faults a request: the collections un-share only
the GC-tracked objects' pages); the same interleaved load again ("warm" throughput: steady
state, first touches behind); then SIGKILL one worker and time until a new one answers
a database request (median of a few kills). Every server is stopped - its whole process
group, SIGTERM then SIGKILL - whatever happened.

Why not the lab's ``AppServer``: it loads the lab's app with a fixed four workers; this needs
its own app and 4 or 8 workers, so the small server control lives here (the lab's load client
and ``free_port`` are reused as they are).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import sqlalchemy as sa

from forkguard.lab.commands import gunicorn_argv, uwsgi_argv
from forkguard.lab.load import LoadResult, run_load
from forkguard.lab.procfs import Counters, child_pids, children_of, counters, smaps_rollup
from forkguard.lab.servers import free_port

from .hotpath import BACKENDS
from .timing import median, rotation

log = logging.getLogger("forkguard.bench")

SERVERS = ("uwsgi", "gunicorn")
# uWSGI's master looks for dead workers once per check-interval (1 s, its minimum).
MASTER_CYCLE_S = 1.0
VARIANTS = ("lazy", "forkguard", "forkguard-freeze")
VARIANT_LABELS = {
    "lazy": "lazy-apps / no --preload",
    "forkguard": "preload + forkguard",
    "forkguard-freeze": "preload + forkguard + freeze_gc",
}
PHASES = ("ready", "load", "gc", "warm")


@dataclass
class PreforkConfig:
    servers: Sequence[str] = SERVERS
    workers: Sequence[int] = (4, 8)
    mb: float = 300.0
    # The first load is bounded by requests, not seconds: every request touches 0.1 % of the
    # working set (reference counts), so what it un-shares grows with the number served per
    # worker - about 1 - exp(-k / 1000) of the pages after k requests - whatever the speed of
    # the machine. 500 a worker is the "5 s of load" on this machine kind.
    first_load_requests_per_worker: int = 500
    # Round counts are multiples of the three variants, so that the rotation puts each one in
    # each position (first, middle, last) equally often.
    first_load_rounds: int = 6
    # The warm load is timed: 1 s slices, many of them; a throughput ratio is the median of
    # the per-slice pairs. One pair moves by 5-10 % on a 2-core machine shared with the load
    # client, so the median of n pairs is good to about 1.25 * 7 % / sqrt(n): 30 pairs, ~1.6 %.
    load_seconds: float = 30.0
    load_rounds: int = 30
    # The full collections write only to GC-tracked objects (their GC headers); a page that
    # holds untracked objects alone - strs, floats, ints - stays shared until a request first
    # changes a reference count on one of them, and then the worker copies it. So before the
    # warm load every server is loaded alone, in slices, until a slice's workers take at most
    # this many minor faults per request (a lazy-apps worker: ~0.02). Measured on this machine
    # kind: ~10 us of system time per such fault, so 0.5 a request is under 0.5 % of a ~1.2 ms
    # request.
    settle_faults_per_request: float = 0.5
    settle_slice_s: float = 1.0
    settle_max_s: float = 90.0
    respawns: int = 4
    backend: str = "mariadb"
    start_timeout: float = 120.0
    run_timeout: float = 240.0


@dataclass
class Memory:
    pss_kb: int = 0
    uss_kb: int = 0
    rss_kb: int = 0
    master_pss_kb: int = 0
    workers_pss_kb: int = 0
    workers_uss_kb: int = 0
    processes: int = 0


@dataclass
class Run:
    server: str
    workers: int
    variant: str
    startup_s: float = 0.0
    memory: dict[str, Memory] = field(default_factory=dict)
    throughput_rps: float = 0.0
    throughput_rounds: list[float] = field(default_factory=list)
    warm_throughput_rps: float = 0.0
    warm_throughput_rounds: list[float] = field(default_factory=list)
    load_minor_faults: int = 0
    warm_minor_faults: int = 0
    warm_requests: int = 0
    warm_user_s: float = 0.0  # the workers' CPU time during the warm load
    warm_system_s: float = 0.0
    settle_s: float = 0.0
    settle_requests: int = 0
    settle_faults_per_request: list[float] = field(default_factory=list)  # one per slice
    settled: bool = False
    load_requests: int = 0
    load_errors: int = 0
    gc_seconds: list[float] = field(default_factory=list)
    gc_freeze_counts: list[int] = field(default_factory=list)
    respawn_s: list[float] = field(default_factory=list)
    respawn_fork_s: list[float] = field(default_factory=list)
    error: Optional[str] = None

    @property
    def respawn_median(self) -> float:
        return median(self.respawn_s) if self.respawn_s else float("nan")

    @property
    def respawn_fork_median(self) -> float:
        return median(self.respawn_fork_s) if self.respawn_fork_s else float("nan")


# ---- processes and memory ------------------------------------------------------------------


def kill_time(cycle_start: float, i: int, n: int, now: float | None = None) -> float:
    """When to kill a worker for the ``i``-th of ``n`` respawns: evenly over the master's cycle.

    A worker dies at no particular moment of its master's cycle, so the kills sample that
    cycle evenly: ``(i + 0.5) / n`` of it. uWSGI's master looks for dead workers once per
    ``check-interval`` (1 s) counted from its last wake-up, which is when it forked the last
    replacement (``cycle_start``); the kill comes at the first moment of that phase after the
    workers are back (``now``). Spacing kills relative to "workers are back" instead would favour
    whichever variant happens to come back at a good phase (a lazy worker ready 2.3 s after its
    fork sits 0.7 s before a tick; a preloaded one, 0.95 s). gunicorn's arbiter reacts to
    SIGCHLD at once, so for it the offsets are only spacing.
    """
    now = time.monotonic() if now is None else now
    offset = (i + 0.5) / n * MASTER_CYCLE_S
    cycles = max(0, math.ceil((now - cycle_start - offset) / MASTER_CYCLE_S))
    return cycle_start + cycles * MASTER_CYCLE_S + offset


def _first_new_child(ppid: int, known: set[int], found: list[float], stop: threading.Event) -> None:
    while not stop.is_set():
        if child_pids(ppid) - known:
            found.append(time.monotonic())
            return
        time.sleep(0.001)


def measure_memory(master: int) -> Memory:
    mem = Memory()
    for pid in [master, *children_of(master)]:
        roll = smaps_rollup(pid)
        if not roll:
            continue
        uss = roll.get("Private_Clean", 0) + roll.get("Private_Dirty", 0)
        mem.pss_kb += roll.get("Pss", 0)
        mem.uss_kb += uss
        mem.rss_kb += roll.get("Rss", 0)
        mem.processes += 1
        if pid == master:
            mem.master_pss_kb = roll.get("Pss", 0)
        else:
            mem.workers_pss_kb += roll.get("Pss", 0)
            mem.workers_uss_kb += uss
    return mem


def http_json(port: int, path: str, timeout: float = 10.0) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        log.debug("GET %s: %s", path, exc)
        return 0, None
    finally:
        conn.close()


def burst(port: int, path: str, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """``n`` concurrent GETs; the JSON bodies of the 200 answers. With a ``hold`` in the path
    each worker stays busy, so the burst spreads over the workers."""
    bodies: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one() -> None:
        status, body = http_json(port, path, timeout)
        if status == 200 and isinstance(body, dict):
            with lock:
                bodies.append(body)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout + 1)
    return bodies


# ---- one server ----------------------------------------------------------------------------


class Server:
    """uWSGI or gunicorn with :mod:`.memapp`, in its own process group on 127.0.0.1."""

    def __init__(
        self, kind: str, variant: str, workers: int, env: dict[str, str], workdir: str
    ) -> None:
        self.kind, self.variant, self.workers = kind, variant, workers
        self.port = free_port()
        self.env = env
        self.log_path = os.path.join(workdir, f"{kind}-{variant}-{workers}.log")
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self._log: Any = None
        lazy = variant == "lazy"
        if kind == "uwsgi":
            self.argv = uwsgi_argv(
                "forkguard.bench.memapp:app",
                self.port,
                workers,
                lazy=lazy,
                harakiri_s=60,
                worker_reload_mercy_s=2,
                extra=["--reload-mercy", "2"],
            )
        elif kind == "gunicorn":
            self.argv = gunicorn_argv(
                "forkguard.bench.memapp:app",
                self.port,
                workers,
                preload=not lazy,
                timeout_s=60,
                graceful_timeout_s=2,
            )
        else:
            raise ValueError(f"unknown server {kind!r}; expected one of {SERVERS}")

    @property
    def master(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float) -> float:
        """Start; seconds until every worker has answered a request."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        seen: set[int] = set()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited at start; log:\n{self.tail()}")
            pids = set(children_of(self.master))
            if len(pids) >= self.workers:
                for body in burst(self.port, "/health?hold=0.05", 2 * self.workers):
                    seen.add(int(body["pid"]))
                if len(seen & pids) >= self.workers:
                    return time.monotonic() - t0
            else:
                time.sleep(0.02)
        raise RuntimeError(f"{self.kind} not ready in {timeout:.0f}s; log:\n{self.tail()}")

    def collect_everywhere(self, timeout: float) -> tuple[list[float], list[int]]:
        """One full collection in every worker (``/gc`` until each current pid has answered)."""
        want = set(children_of(self.master))
        done: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while not want <= set(done) and time.monotonic() < deadline:
            for body in burst(self.port, "/gc?hold=0.3", 2 * self.workers, timeout=30.0):
                done.setdefault(int(body["pid"]), body)
        if not want <= set(done):
            raise RuntimeError(f"only {len(set(done) & want)}/{len(want)} workers collected")
        return (
            [float(done[p]["seconds"]) for p in sorted(want)],
            [int(done[p]["freeze_count"]) for p in sorted(want)],
        )

    def respawn(self, timeout: float) -> tuple[float, float, float]:
        """SIGKILL one worker: when it was killed (``time.monotonic()``), seconds until the
        master has forked its replacement, and until a new worker answers a database request.

        The first is the server's reaction time, the same whatever the app does (uWSGI's
        master looks once per ``check-interval``); the rest is the new worker's start-up,
        which is what preloading changes. A thread polls the master's children every
        millisecond for the fork.
        """
        before = set(children_of(self.master))
        if len(before) < self.workers:
            raise RuntimeError(f"{len(before)}/{self.workers} workers before the kill")
        forked: list[float] = []
        stop = threading.Event()
        watcher = threading.Thread(
            target=_first_new_child, args=(self.master, before, forked, stop), daemon=True
        )
        watcher.start()
        t0 = time.monotonic()
        os.kill(min(before), signal.SIGKILL)
        path = f"/echo?token={uuid.uuid4().hex}&hold=0.02"
        served: Optional[float] = None
        try:
            while served is None and time.monotonic() - t0 < timeout:
                bodies = burst(self.port, path, 2 * self.workers)
                if any(int(body["pid"]) not in before for body in bodies):
                    served = time.monotonic()
        finally:
            stop.set()
            watcher.join(5)
        if served is None:
            raise RuntimeError(f"no new worker served within {timeout:.0f}s")
        # A new pid answered, so it was forked; the watcher may have seen it only after the
        # answer (or between two polls just now): the fork is never later than the answer.
        return t0, min(forked[0] if forked else served, served) - t0, served - t0

    def wait_workers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = children_of(self.master)
            if len(pids) >= self.workers:
                bodies = burst(self.port, "/health?hold=0.05", 2 * self.workers)
                if len({int(b["pid"]) for b in bodies} & set(pids)) >= self.workers:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"workers did not come back within {timeout:.0f}s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(8)
                except subprocess.TimeoutExpired:
                    log.warning("%s master %d did not stop; killing its group", self.kind, proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, nbytes: int = 3000) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read().decode("utf-8", "replace")[-nbytes:]
        except OSError as exc:
            return f"(cannot read {self.log_path}: {exc})"


def _env(variant: str, db_url: str, table: str, mb: float) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("FORKGUARD_MODE", "FORKGUARD_TRACE", "FORKGUARD_FREEZE_GC"):
        env.pop(var, None)
    env.update(
        FG_BENCH_DB_URL=db_url,
        FG_BENCH_TABLE=table,
        FG_BENCH_MB=str(mb),
        FG_BENCH_GUARD="none" if variant == "lazy" else "forkguard",
        PYTHONUNBUFFERED="1",
    )
    if variant == "forkguard-freeze":
        env["FORKGUARD_FREEZE_GC"] = "1"
    return env


def _fail(run: Run, what: str, exc: BaseException) -> None:
    log.error("%s %s x%d: %s failed", run.server, run.variant, run.workers, what, exc_info=exc)
    if run.error is None:
        run.error = f"{what}: {type(exc).__name__}: {str(exc)[:500]}"


def _load_slice(run: Run, server: Server, *, total: int, time_cap: float, seed: int) -> LoadResult:
    """One slice of the lab's load on one server (two clients per worker, at least eight),
    counted into ``run``: its requests and errors; errors are logged, never dropped."""
    load = run_load(
        server.port,
        total=total,
        concurrency=max(8, 2 * run.workers),
        time_cap=time_cap,
        request_timeout=30.0,
        seed=seed,
    )
    run.load_requests += load.requests
    run.load_errors += load.http_errors + load.echo_mismatches + load.read_mismatches
    if load.http_errors or load.echo_mismatches or load.read_mismatches:
        log.warning(
            "%s %s x%d: %d errors, %d echo / %d read mismatches under load",
            run.server,
            run.variant,
            run.workers,
            load.http_errors,
            load.echo_mismatches,
            load.read_mismatches,
        )
    return load


def _settle(cfg: PreforkConfig, run: Run, server: Server) -> None:
    """Load one server alone until copy-on-write has settled (see
    ``PreforkConfig.settle_faults_per_request``), so that the warm load compares steady states.

    Slices of ``settle_slice_s``; after each, the workers' minor faults per request. Stops at
    the first slice at or under the threshold, or after ``settle_max_s`` (``run.settled`` then
    stays False and the report says so)."""
    t0 = time.monotonic()
    while True:
        pids = children_of(server.master)
        before = counters(pids)
        load = _load_slice(
            run,
            server,
            total=10**7,
            time_cap=cfg.settle_slice_s,
            seed=len(run.settle_faults_per_request),
        )
        run.settle_requests += load.requests
        per_request = (counters(pids) - before).minor_faults / max(1, load.requests)
        run.settle_faults_per_request.append(per_request)
        run.settle_s = time.monotonic() - t0
        if per_request <= cfg.settle_faults_per_request:
            run.settled = True
            return
        if run.settle_s >= cfg.settle_max_s:
            log.warning(
                "%s %s x%d: still %.1f minor faults per request after %.0f s of settling",
                run.server,
                run.variant,
                run.workers,
                per_request,
                run.settle_s,
            )
            return


def _interleaved_load(
    cfg: PreforkConfig,
    runs: dict[str, Run],
    servers: dict[str, Server],
    live: list[str],
    into: str,
    *,
    first: bool,
) -> dict[str, tuple[Counters, int]]:
    """Rounds that each load every live variant in turn (order rotated): the first load a
    fixed number of requests per worker, the warm one ``load_seconds`` of time.

    Returns, per variant, what the workers spent (minor faults: copy-on-write copies; CPU)
    and the requests served during this load."""
    before = {v: counters(children_of(servers[v].master)) for v in live}
    requests0 = {v: runs[v].load_requests for v in live}
    if first:
        rounds = max(1, cfg.first_load_rounds)
        slice_s = cfg.start_timeout  # bounded by requests; the cap only stops a stuck server
    else:
        rounds = max(1, cfg.load_rounds)
        slice_s = cfg.load_seconds / rounds
    for r in range(rounds):
        for variant in rotation(live, r):
            run = runs[variant]
            per_slice = (
                cfg.first_load_requests_per_worker * run.workers // rounds if first else 10**7
            )
            load = _load_slice(run, servers[variant], total=per_slice, time_cap=slice_s, seed=r)
            getattr(run, into).append(load.ok / load.elapsed if load.elapsed > 0 else 0.0)
    return {
        v: (
            counters(children_of(servers[v].master)) - before[v],
            runs[v].load_requests - requests0[v],
        )
        for v in live
    }


def run_cell(
    cfg: PreforkConfig, kind: str, workers: int, db_url: str, table: str, tmp: str
) -> list[Run]:
    """The three variants of one (server, worker count), side by side.

    All three servers stay up for the whole cell (an idle one costs no CPU), so the load can be
    interleaved: ``load_rounds`` rounds, each loading every variant in turn (order rotated),
    for ``load_seconds / load_rounds`` apiece; throughput ratios are per-round pairs. Start-up,
    memory, collections, settling and respawns are measured one server at a time.
    """
    runs = {v: Run(server=kind, workers=workers, variant=v) for v in VARIANTS}
    servers: dict[str, Server] = {}
    try:
        for variant in VARIANTS:
            run = runs[variant]
            server = Server(kind, variant, workers, _env(variant, db_url, table, cfg.mb), tmp)
            servers[variant] = server
            try:
                run.startup_s = server.start(cfg.start_timeout)
                run.memory["ready"] = measure_memory(server.master)
            except Exception as exc:
                _fail(run, "start", exc)
        live = [v for v in VARIANTS if runs[v].error is None]
        first_load = _interleaved_load(cfg, runs, servers, live, "throughput_rounds", first=True)
        for v in live:
            runs[v].load_minor_faults = first_load[v][0].minor_faults
        for variant in live:
            run, server = runs[variant], servers[variant]
            run.throughput_rps = median(run.throughput_rounds)
            try:
                run.memory["load"] = measure_memory(server.master)
                run.gc_seconds, run.gc_freeze_counts = server.collect_everywhere(cfg.start_timeout)
                run.memory["gc"] = measure_memory(server.master)
            except Exception as exc:
                _fail(run, "full collection", exc)
        for variant in live:
            try:
                _settle(cfg, runs[variant], servers[variant])
            except Exception as exc:
                _fail(runs[variant], "settling", exc)
        # Throughput again, once the first touches (copy-on-write faults) are behind us;
        # counted again to show what is left.
        warm = _interleaved_load(cfg, runs, servers, live, "warm_throughput_rounds", first=False)
        for variant in live:
            run, server = runs[variant], servers[variant]
            spent, run.warm_requests = warm[variant]
            run.warm_minor_faults = spent.minor_faults
            run.warm_user_s, run.warm_system_s = spent.user_s, spent.system_s
            run.warm_throughput_rps = median(run.warm_throughput_rounds)
            try:
                run.memory["warm"] = measure_memory(server.master)
            except Exception as exc:
                _fail(run, "memory after warm load", exc)
        for variant in live:
            run, server = runs[variant], servers[variant]
            t_begin = time.monotonic()
            try:
                # The first kill only finds the master's cycle (its replacement's fork time).
                killed_at, fork_s, _ = server.respawn(cfg.start_timeout)
                cycle_start = killed_at + fork_s
                for i in range(cfg.respawns):
                    server.wait_workers(cfg.start_timeout)
                    time.sleep(max(0.0, kill_time(cycle_start, i, cfg.respawns) - time.monotonic()))
                    killed_at, fork_s, serve_s = server.respawn(cfg.start_timeout)
                    cycle_start = killed_at + fork_s
                    run.respawn_fork_s.append(fork_s)
                    run.respawn_s.append(serve_s)
                    if time.monotonic() - t_begin > cfg.run_timeout:
                        log.warning("%s %s x%d: respawn budget spent", kind, variant, workers)
                        break
            except Exception as exc:
                _fail(run, "respawn", exc)
            finally:
                server.stop()
    finally:
        for server in servers.values():
            server.stop()
    return [runs[v] for v in VARIANTS]


def _table_ddl(backend: str, table: str) -> str:
    if backend == "mariadb":
        return (
            f"CREATE TABLE {table} (id INTEGER AUTO_INCREMENT PRIMARY KEY, "
            "email VARCHAR(190) NOT NULL UNIQUE, name VARCHAR(100) NOT NULL DEFAULT '')"
        )
    return (
        f"CREATE TABLE {table} (id SERIAL PRIMARY KEY, "
        "email VARCHAR(190) NOT NULL UNIQUE, name VARCHAR(100) NOT NULL DEFAULT '')"
    )


def run_prefork(cfg: PreforkConfig) -> dict[str, Any]:
    db_url = BACKENDS[cfg.backend]
    table = f"fg_bench_users_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    runs: list[Run] = []
    with admin.begin() as conn:
        conn.execute(sa.text(_table_ddl(cfg.backend, table)))
    tmp = tempfile.mkdtemp(prefix="fg_bench_")
    try:
        for kind in cfg.servers:
            for workers in cfg.workers:
                log.info("prefork: %s x%d (%s)", kind, workers, ", ".join(VARIANTS))
                runs += run_cell(cfg, kind, workers, db_url, table, tmp)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        admin.dispose()
        failed = any(r.error for r in runs)
        if failed:
            log.warning("server logs kept in %s", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "config": {
            "servers": list(cfg.servers),
            "workers": list(cfg.workers),
            "mb": cfg.mb,
            "first_load_requests_per_worker": cfg.first_load_requests_per_worker,
            "first_load_rounds": cfg.first_load_rounds,
            "load_seconds": cfg.load_seconds,
            "load_rounds": cfg.load_rounds,
            "settle_faults_per_request": cfg.settle_faults_per_request,
            "settle_slice_s": cfg.settle_slice_s,
            "settle_max_s": cfg.settle_max_s,
            "respawns": cfg.respawns,
            "kill_schedule": "master-cycle",
            "backend": cfg.backend,
            "driver_url": sa.engine.make_url(db_url).render_as_string(hide_password=True),
        },
        "runs": [run_to_dict(r) for r in runs],
    }


def run_to_dict(run: Run) -> dict[str, Any]:
    return {
        "server": run.server,
        "workers": run.workers,
        "variant": run.variant,
        "startup_s": run.startup_s,
        "memory": {phase: vars(mem).copy() for phase, mem in run.memory.items()},
        "throughput_rps": run.throughput_rps,
        "throughput_rounds": run.throughput_rounds,
        "warm_throughput_rps": run.warm_throughput_rps,
        "warm_throughput_rounds": run.warm_throughput_rounds,
        "load_minor_faults": run.load_minor_faults,
        "warm_minor_faults": run.warm_minor_faults,
        "warm_requests": run.warm_requests,
        "warm_user_s": run.warm_user_s,
        "warm_system_s": run.warm_system_s,
        "settle_s": run.settle_s,
        "settle_requests": run.settle_requests,
        "settle_faults_per_request": run.settle_faults_per_request,
        "settled": run.settled,
        "load_requests": run.load_requests,
        "load_errors": run.load_errors,
        "gc_seconds": run.gc_seconds,
        "gc_freeze_counts": run.gc_freeze_counts,
        "respawn_s": run.respawn_s,
        "respawn_median_s": run.respawn_median if run.respawn_s else None,
        "respawn_fork_s": run.respawn_fork_s,
        "respawn_fork_median_s": run.respawn_fork_median if run.respawn_fork_s else None,
        "error": run.error,
    }
