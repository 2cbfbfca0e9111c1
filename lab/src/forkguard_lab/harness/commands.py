"""uWSGI and gunicorn command lines, in one place for the lab, the benchmarks and the tests.

:func:`default_uwsgi_argv` / :func:`default_gunicorn_argv` serve an app with the server's own
defaults: the tests check forkguard under those. :func:`uwsgi_argv` / :func:`gunicorn_argv`
add what the lab and the benchmarks need: a server run the way a production deployment would,
tuned only where a short run on a shared machine needs it. Why these flags:

* ``127.0.0.1`` only, a private port, ``--listen`` / ``--backlog`` 128 (every variant alike).
* uWSGI ``--max-requests`` does not recycle a worker younger than ``--min-worker-lifetime``
  (10 s by default) and its fork-bomb guard sleeps 2 s; ``0`` for both so that a short run
  re-forks and a killed worker is replaced at once.
* ``--harakiri`` / gunicorn ``--timeout``: a worker that reads another process's reply can
  block forever on a socket; production servers kill such workers, and so do we.
* ``--worker-reload-mercy``: how long a recycled uWSGI worker may take to exit by itself
  (atexit, finalizers: where mysqlclient's COM_QUIT fires) before the master SIGKILLs it.
* gunicorn >= 24 opens a control socket in ``$HOME`` by default: one path shared by every
  gunicorn on the machine (the benchmark runs three at once), and not ours to touch.
* The "lazy" strategy is uWSGI ``--lazy-apps`` / gunicorn without ``--preload``: the app is
  imported in every worker after the fork (the usual answer to the fork problem).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Sequence

log = logging.getLogger("forkguard_lab")


def executable(name: str) -> str:
    """The executable next to this interpreter (the venv's), else the one on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(here, os.X_OK):
        return here
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed: pip install 'forkguard[lab]'")
    return found


def gunicorn_no_control_socket() -> list[str]:
    """``--no-control-socket`` where gunicorn has one (>= 24: a socket in ``$HOME``, one path
    for every gunicorn on the machine); nothing for older versions, which reject the flag."""
    return ["--no-control-socket"] if _has_control_socket() else []


def _has_control_socket() -> bool:
    try:
        from importlib.metadata import version

        major = int(version("gunicorn").split(".")[0])
    except Exception as exc:  # PackageNotFoundError (gunicorn from PATH) or an odd version
        log.debug("gunicorn version unknown: %s", exc)
        return False
    return major >= 24


def default_uwsgi_argv(
    module: str, port: int, workers: int, extra: Sequence[str] = ()
) -> list[str]:
    """``uwsgi --master`` with ``workers`` processes serving ``module`` (``pkg.mod:app``),
    preloaded (no lazy-apps), as its defaults have it."""
    return [
        executable("uwsgi"),
        "--master",
        "--processes",
        str(workers),
        "--http-socket",
        f"127.0.0.1:{port}",
        "--module",
        module,
        "--die-on-term",
        "--need-app",
        "--disable-logging",
        *extra,
    ]


def default_gunicorn_argv(
    app: str, port: int, workers: int, *, preload: bool = True, extra: Sequence[str] = ()
) -> list[str]:
    """gunicorn with ``workers`` workers serving ``app`` (``pkg.mod:app``), ``--preload`` unless
    told otherwise."""
    return [
        executable("gunicorn"),
        *(["--preload"] if preload else []),
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        *extra,
        *gunicorn_no_control_socket(),
        app,
    ]


def uwsgi_argv(
    module: str,
    port: int,
    workers: int,
    *,
    lazy: bool,
    harakiri_s: int,
    worker_reload_mercy_s: int,
    extra: Sequence[str] = (),
) -> list[str]:
    """:func:`default_uwsgi_argv` tuned for a short run (see the module's docstring)."""
    tuned = [
        "--virtualenv",
        sys.prefix,
        "--harakiri",
        str(harakiri_s),
        "--listen",
        "128",
        "--min-worker-lifetime",
        "0",
        "--forkbomb-delay",
        "0",
        "--worker-reload-mercy",
        str(worker_reload_mercy_s),
        "--ignore-sigpipe",
        "--ignore-write-errors",
        "--disable-write-exception",
        *extra,
        *(["--lazy-apps"] if lazy else []),
    ]
    return default_uwsgi_argv(module, port, workers, tuned)


def gunicorn_argv(
    app: str,
    port: int,
    workers: int,
    *,
    preload: bool,
    timeout_s: int,
    graceful_timeout_s: int,
    extra: Sequence[str] = (),
) -> list[str]:
    """:func:`default_gunicorn_argv` with sync workers, tuned for a short run."""
    tuned = [
        "--worker-class",
        "sync",
        "--timeout",
        str(timeout_s),
        "--graceful-timeout",
        str(graceful_timeout_s),
        "--backlog",
        "128",
        *extra,
    ]
    return default_gunicorn_argv(app, port, workers, preload=preload, extra=tuned)
