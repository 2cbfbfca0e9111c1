"""``forkguard.install()`` in the post-fork hook protects as well as at import.

One lab cell per (server, style, driver), with ``FORKGUARD_LAB_INSTALL_AT=postfork``: the app
imports forkguard at the top but calls ``forkguard.install()`` only in the server's post-fork
hook (uWSGI ``@postfork``, gunicorn ``post_fork`` with ``--preload``), in each worker, after
the master has made its engine and its connection. Each such cell must be clean. The twin is the
same placement with a hook that does nothing (strategy ``none``): it must show errors, or the
cells prove nothing.

Everything runs through :func:`forkguard_lab.matrix.run_cell` against the lab's private
MariaDB and PostgreSQL servers (one of each for the module). The only addition is a spy around
the cell's load: once the load is done, it asks the live workers for ``/stats``.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forkguard_lab import DRIVERS, matrix
from forkguard_lab.harness.http import http_get
from forkguard_lab.harness.servers import missing_binaries_message, private_server
from forkguard_lab.matrix import CellResult, Target, run_cell
from forkguard_lab.runners import INSTALL_AT_ENV, WORKERS

pytestmark = pytest.mark.slow

SERVERS = ("uwsgi", "gunicorn")
STYLES = ("fsa2", "fsa3")
# Small on purpose (16 + 4 cells on a shared 2-CPU box): 120 requests with workers recycled
# every 15 is still 8+ forks per cell, each worker serving concurrent requests.
REQUESTS = 120
MAX_REQUESTS = 15
CONCURRENCY = 8
TIME_CAP = 20.0

_cell_index = itertools.count()


@pytest.fixture(scope="module")
def targets() -> Iterator[dict[str, Target]]:
    """One private MariaDB and one private PostgreSQL for the whole module, always stopped."""
    missing = missing_binaries_message(["mysql", "postgresql"])
    if missing:
        pytest.skip(missing)
    with contextlib.ExitStack() as stack:
        out: dict[str, Target] = {}
        for kind in ("mysql", "postgresql"):
            srv = stack.enter_context(private_server(kind))
            out[kind] = Target(kind=kind, host="127.0.0.1", port=srv.port, user=srv.admin_user)
        yield out


@pytest.fixture
def worker_stats(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """``/stats`` answers from the cell's workers, gathered right after its load."""
    seen: list[dict[str, Any]] = []
    real_run_load = matrix.run_load

    def load_then_stats(port: int, **kwargs: Any) -> Any:
        result = real_run_load(port, **kwargs)
        for _ in range(3 * WORKERS):
            status, body = http_get(port, "/stats", timeout=5.0)
            if status == 200 and isinstance(body, dict):
                seen.append(body)
        return result

    monkeypatch.setattr(matrix, "run_load", load_then_stats)
    return seen


def _run_postfork_cell(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    targets: dict[str, Target],
    server: str,
    style: str,
    driver: str,
    strategy: str,
) -> CellResult:
    # The servers inherit the environment: the app and runners.build_server both read these.
    monkeypatch.setenv(INSTALL_AT_ENV, "postfork")
    monkeypatch.setenv("FORKGUARD_LAB_DATA_MB", "4")  # memory is not under test here
    res = run_cell(
        server,
        driver,
        strategy,
        targets[DRIVERS[driver][0]],
        index=next(_cell_index),
        workdir=str(tmp_path),
        requests=REQUESTS,
        max_requests=MAX_REQUESTS,
        concurrency=CONCURRENCY,
        time_cap=TIME_CAP,
        style=style,
    )
    print(f"\nCELL {server}/{style}/{driver} {strategy}@postfork: {_outcome(res)}")
    return res


def _outcome(res: CellResult) -> str:
    if res.error is not None:
        return f"harness error: {res.error}"
    verdict = "clean" if res.clean else "ERRORS"
    return (
        f"{verdict}; requests={res.requests} ok={res.ok} http_errors={res.http_errors} "
        f"{res.status_counts} db_errors={res.db_errors} {res.db_error_kinds} "
        f"wrong_answers={res.leaks} lost_writes={res.lost_writes} "
        f"failed_but_committed={res.failed_but_committed} "
        f"respawn={res.respawn_status}/{res.respawn_db_errors} "
        f"workers_seen={res.worker_pids_seen} {res.cell_seconds}s"
    )


@pytest.mark.parametrize("driver", list(DRIVERS))
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("server", SERVERS)
def test_install_in_postfork_hook_is_clean(
    server: str,
    style: str,
    driver: str,
    targets: dict[str, Target],
    worker_stats: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    res = _run_postfork_cell(monkeypatch, tmp_path, targets, server, style, driver, "forkguard")
    where = f"{server}/{style}/{driver} forkguard@postfork ({_outcome(res)}; logs: {tmp_path})"
    assert res.error is None, where
    assert res.requests >= REQUESTS // 2, f"{where}: too few requests to prove anything"
    assert res.worker_pids_seen > WORKERS, f"{where}: workers were never recycled"
    assert res.acknowledged_writes > 0, f"{where}: no write was acknowledged"
    assert res.http_errors == 0, where
    assert res.db_errors == 0, where
    assert res.leaks == 0, where
    assert res.lost_writes == 0, where
    assert res.clean, where
    # Each worker inherits the master's one connection (fsa2: checked out by the pushed app
    # context's session; fsa3: idle in the pool): forkguard must have silenced it.
    assert worker_stats, f"{where}: no worker answered /stats"
    assert {s.get("install_at") for s in worker_stats} == {"postfork"}, worker_stats
    neutralized = [s.get("connections_neutralized", 0) for s in worker_stats]
    assert max(neutralized) >= 1, f"{where}: no worker neutralized anything: {worker_stats}"


@pytest.mark.parametrize("driver", list(DRIVERS))
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("server", SERVERS)
def test_postfork_hook_doing_nothing_shows_errors(
    server: str,
    style: str,
    driver: str,
    targets: dict[str, Target],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The twin: same servers, same hook placement, the hook does nothing."""
    res = _run_postfork_cell(monkeypatch, tmp_path, targets, server, style, driver, "none")
    where = f"{server}/{style}/{driver} none@postfork ({_outcome(res)}; logs: {tmp_path})"
    assert res.error is None, where
    symptoms = (
        res.http_errors
        + res.db_errors
        + res.leaks
        + res.lost_writes
        + res.failed_but_committed
        + res.respawn_db_errors
    )
    assert symptoms > 0, f"{where}: no error at all, so the clean cells prove nothing"
