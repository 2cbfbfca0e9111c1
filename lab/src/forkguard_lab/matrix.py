"""One cell of the lab, end to end: database, server, load, memory, respawn, logs, table check.

A cell is (server, driver, strategy). It gets its own database (``fg_lab_<pid>_<n>``), so
cells never see each other's rows, and everything it starts is stopped in ``finally``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Optional

from . import DRIVERS
from .harness.load import LoadRun, run_load
from .harness.logscan import scan
from .harness.prefork import AppServer
from .harness.procfs import pss_kb
from .harness.servers import admin_execute
from .memory import PssSampler, answer_spans, probe_workers, settled_pss, settled_samples
from .runners import WORKERS, build_server

log = logging.getLogger("forkguard_lab")


@dataclass
class Target:
    """Where one backend's databases are made: a private server, or one named by ``--db``."""

    kind: str  # "mysql" or "postgresql"
    host: str
    port: int
    user: str
    password: Optional[str] = None
    private: bool = True
    # Where the app connects when that is not the server itself (a PgBouncer in front of it);
    # the lab's own statements (CREATE DATABASE, the write check) still go to ``port``.
    app_port: Optional[int] = None

    def url(self, dialect_driver: str, database: str) -> str:
        from sqlalchemy.engine import URL

        return URL.create(
            f"{self.kind}+{dialect_driver}",
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.app_port or self.port,
            database=database,
        ).render_as_string(hide_password=False)

    def execute(self, sql: str, database: Optional[str] = None) -> list[tuple[Any, ...]]:
        return admin_execute(
            self.kind,
            self.host,
            self.port,
            self.user,
            sql,
            password=self.password,
            database=database,
        )


@dataclass
class CellResult:
    """Everything the table, the JSON and the test look at for one cell."""

    server: str
    driver: str
    strategy: str
    requests: int = 0
    requests_asked: int = 0
    time_cap_s: float = 0.0
    ok: int = 0
    http_errors: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    db_errors: int = 0
    db_error_kinds: dict[str, int] = field(default_factory=dict)
    echo_mismatches: int = 0
    read_mismatches: int = 0
    acknowledged_writes: int = 0
    lost_writes: int = 0
    failed_but_committed: int = 0
    throughput_rps: float = 0.0
    workers_pss_kb: int = 0  # 0 when not measured; then pss_not_measured says why
    workers_pss_each_kb: list[int] = field(default_factory=list)
    pss_not_measured: str = ""
    pss_readings: int = 0
    master_pss_kb: int = 0
    respawn_s: Optional[float] = None
    respawn_status: str = ""
    respawn_db_errors: int = 0
    worker_pids_seen: int = 0
    load_seconds: float = 0.0
    cell_seconds: float = 0.0
    timed_out: bool = False
    cut_off: int = 0
    error: Optional[str] = None
    # A user's app (``--app``): its answers are not checked (no wrong answers or lost writes
    # to count), and each URL's statuses are kept, to tell a wrong --url from a broken app.
    checks_answers: bool = True
    url_statuses: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def time_capped(self) -> bool:
        """The load stopped at its time cap before the requested count: fewer requests."""
        return self.requests < self.requests_asked

    @property
    def leaks(self) -> int:
        return self.echo_mismatches + self.read_mismatches

    @property
    def clean(self) -> bool:
        """No symptom at all (what every forkguard cell must be)."""
        return (
            self.error is None
            and self.requests > 0
            and self.http_errors == 0
            and self.db_errors == 0
            and self.leaks == 0
            and self.lost_writes == 0
            and self.failed_but_committed == 0
            and self.respawn_db_errors == 0
        )

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["leaks"] = self.leaks
        d["clean"] = self.clean
        d["time_capped"] = self.time_capped
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellResult:
        """A cell back from the JSON document (the derived keys are recomputed, not read)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def run_cell(
    server: str,
    driver: str,
    strategy: str,
    target: Target,
    *,
    index: int,
    workdir: str,
    requests: int,
    max_requests: int,
    concurrency: int = 16,
    time_cap: float = 30.0,
    style: str = "fsa2",
    respawn_timeout: float = 5.0,
    progress: Optional[Callable[[int], None]] = None,
) -> CellResult:
    """Run one cell; never raises for a failure of the system under test (it is recorded)."""
    t0 = time.monotonic()
    res = CellResult(server, driver, strategy, requests_asked=requests, time_cap_s=time_cap)
    dbname = f"fg_lab_{os.getpid()}_{index}"
    url = target.url(DRIVERS[driver][1], dbname)
    celldir = os.path.join(workdir, f"{index:02d}-{server}-{driver}-{strategy}")
    os.makedirs(celldir, exist_ok=True)
    target.execute(f"CREATE DATABASE {dbname}")
    app_server = None
    try:
        if strategy == "lazy":
            # Every worker imports the app: create the tables first so they never race.
            _create_tables(url, style, celldir)
        app_server = build_server(
            server, strategy, url, celldir, max_requests=max_requests, style=style
        )
        app_server.start()
        load = load_and_measure(res, app_server, respawn_timeout, total=requests,
                                concurrency=concurrency, time_cap=time_cap, seed=index,
                                progress=progress)  # fmt: skip
        app_server.stop()
        app_server = None
        _check_writes(res, load, target, dbname)
    except Exception as exc:
        log.exception("cell %s/%s/%s failed in the harness", server, driver, strategy)
        res.error = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        if app_server is not None:
            app_server.stop()
        _drop(target, dbname)
        res.cell_seconds = round(time.monotonic() - t0, 2)
    return res


def load_and_measure(
    res: CellResult, app_server: AppServer, respawn_timeout: float, **load: Any
) -> LoadRun:
    """The cell's load (:func:`run_load` with ``load``) with the memory sampler beside it,
    then what the cell records of it: the answers, the settled memory, the DB errors in the
    server's log and the respawn probe."""
    with PssSampler(app_server.worker_pids) as sampler:
        run = run_load(app_server.port, **load)
    _record_load(res, run)
    spans = answer_spans((r.pid, r.t0, r.t1) for r in run.reqs)
    _read_memory(res, app_server, settled_samples(sampler.samples, spans, WORKERS))
    _read_errors_and_respawn(res, app_server, respawn_timeout)
    return run


def _record_load(res: CellResult, load: LoadRun) -> None:
    """What the HTTP load itself saw: answers, errors, mismatched replies, pace."""
    res.requests, res.ok, res.http_errors = load.requests, load.ok, load.http_errors
    res.status_counts = dict(load.status_counts)
    res.echo_mismatches, res.read_mismatches = load.echo_mismatches, load.read_mismatches
    res.acknowledged_writes = len(load.acknowledged)
    res.throughput_rps = round(load.throughput, 1)
    res.worker_pids_seen = len(load.pids_seen)
    res.load_seconds = round(load.elapsed, 2)
    res.timed_out = load.timed_out
    res.cut_off = load.cut_off


def _read_errors_and_respawn(res: CellResult, app_server: AppServer, timeout: float) -> None:
    """DB error kinds from the server's log during the load, then the respawn probe and the
    errors it caused, then whether the server itself exited."""
    load_log = app_server.read_log()
    kinds = scan(load_log)
    respawn, res.respawn_status = app_server.measure_recovery(timeout=timeout)
    res.respawn_s = None if respawn is None else round(respawn, 3)
    res.respawn_db_errors = sum(scan(app_server.read_log()[len(load_log) :]).values())
    # Checked after the respawn probe: a master that halts (gunicorn, when workers fail
    # to boot) takes a moment to exit after its socket is closed.
    deadline = time.monotonic() + 5.0
    while not app_server.worker_pids() and app_server.exited() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)  # no workers left: the master is halting, or respawning
    status = app_server.exited()
    if status is not None:
        kinds[f"server exited (status {status})"] += 1
    res.db_error_kinds = dict(kinds.most_common())
    res.db_errors = sum(kinds.values())


def _check_writes(res: CellResult, load: LoadRun, target: Target, dbname: str) -> None:
    """The table against the replies (server stopped): acknowledged writes that are missing,
    and writes answered as failed that committed anyway."""
    rows = target.execute("SELECT id, email FROM fg_lab_users", database=dbname)
    stored = {(int(r[0]), str(r[1])) for r in rows}
    stored_emails = {email for _, email in stored}
    res.lost_writes = sum(1 for pair in load.acknowledged if pair not in stored)
    res.failed_but_committed = sum(1 for e in load.failed_writes if e in stored_emails)


def _read_memory(res: CellResult, app_server: AppServer, during_load: list[dict[int, int]]) -> None:
    """The workers' PSS, only from instants when every one of them had loaded the app: the
    settled samples ``during_load`` and readings right after it (see :mod:`.memory`)."""
    port, path = app_server.port, app_server.health_path
    reading = settled_pss(
        app_server.worker_pids,
        lambda: probe_workers(port, WORKERS, path=path),
        WORKERS,
        earlier=during_load,
        alive=lambda: app_server.exited() is None,
        # One more reading after the load: each probe round brings recycled lazy-apps workers
        # closer to a re-import, so waiting for three can take a loaded machine 20 s.
        readings=1,
    )
    res.pss_readings = reading.readings
    res.workers_pss_kb = reading.total_kb
    res.workers_pss_each_kb = reading.per_worker_kb
    res.pss_not_measured = reading.not_measured
    res.master_pss_kb = pss_kb(app_server.master_pid)


def _create_tables(url: str, style: str, celldir: str) -> None:
    """Import the app once, outside any server, so workers never race to CREATE TABLE."""
    env = dict(os.environ)
    env.update(FORKGUARD_LAB_STRATEGY="none", FORKGUARD_LAB_DB_URL=url, FORKGUARD_LAB_STYLE=style)
    proc = subprocess.run(
        [sys.executable, "-c", "import forkguard_lab.app"],
        env=env,
        cwd=celldir,
        capture_output=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError("creating the lab tables failed:\n" + proc.stderr.decode()[-2000:])


def _drop(target: Target, dbname: str) -> None:
    """Drop the cell's database (on a private server it goes with the server anyway)."""
    if target.private:
        return
    force = " WITH (FORCE)" if target.kind == "postgresql" else ""
    try:
        target.execute(f"DROP DATABASE IF EXISTS {dbname}{force}")
    except Exception:
        log.exception(
            "could not drop %s on %s:%d; drop it by hand", dbname, target.host, target.port
        )
