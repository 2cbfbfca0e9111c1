"""What a pre-fork master reads from its config: gunicorn's Python file, uWSGI's ini.

A gunicorn config is executed as gunicorn does and its ``wsgi_app`` / ``preload_app`` /
``workers`` read; a uWSGI ini is parsed for ``module`` / ``wsgi-file`` / ``processes`` /
``lazy-apps``, and ``import uwsgi`` is given a stand-in, as inside uWSGI's master.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Iterable

from ._recorders import recorder


class TargetError(Exception):
    """The target cannot be loaded for a reason that is not an exception in the user's code."""


@dataclass
class Master:
    server: str = "python"  # gunicorn | uwsgi | python
    preload: bool = True
    workers: int | None = None
    threads: int | None = None
    app: str | None = None
    config: str | None = None
    forks: bool = True
    notes: list[str] = field(default_factory=list)


def prepend_sys_path(entries: Iterable[str]) -> None:
    """Put ``entries`` first on sys.path, in their order."""
    for entry in reversed(list(entries)):
        sys.path.insert(0, os.path.abspath(entry))


def _set_environ(entries: Iterable[Any]) -> None:
    for env in entries:
        key, _, value = str(env).partition("=")
        os.environ[key] = value


# ---- gunicorn ---------------------------------------------------------------------------------


def gunicorn_master(path: str, target: str | None) -> tuple[Master, str, dict[str, Any]]:
    """Execute a gunicorn config file as gunicorn does and read the settings that matter:
    the master, the app to import, and the config's globals (its post-fork hooks)."""
    spec = importlib.util.spec_from_file_location("__config__", path)
    if spec is None or spec.loader is None:
        raise TargetError(f"{path}: not a Python file gunicorn could load")
    module = importlib.util.module_from_spec(spec)
    recorder.phase = "config"
    spec.loader.exec_module(module)  # user code: its exceptions are import errors
    recorder.phase = "startup"
    cfg = module.__dict__
    master = Master(server="gunicorn", config=path)
    master.preload = bool(cfg.get("preload_app", False))
    workers = cfg.get("workers", int(os.environ.get("WEB_CONCURRENCY", "1")))
    master.workers = int(workers)
    master.threads = int(cfg["threads"]) if "threads" in cfg else None
    _apply_gunicorn_environment(cfg)
    app = target or cfg.get("wsgi_app")
    if not app:
        raise TargetError(
            f"{path}: sets no `wsgi_app`; give the app too: forkguard doctor -c {path} module:app"
        )
    master.app = str(app)
    if not master.preload:
        master.notes.append(
            "preload_app is off: the gunicorn master does not import the app; "
            "each worker imports it after the fork"
        )
    return master, str(app), cfg


def _apply_gunicorn_environment(cfg: dict[str, Any]) -> None:
    """``chdir``, ``pythonpath`` and ``raw_env``, as the master applies them before the app."""
    chdir = cfg.get("chdir")
    if chdir:
        os.chdir(str(chdir))
        sys.path.insert(0, os.path.abspath(str(chdir)))
    pythonpath = cfg.get("pythonpath")
    if pythonpath:
        prepend_sys_path(entry.strip() for entry in str(pythonpath).split(","))
    _set_environ(cfg.get("raw_env", []) or [])


# ---- uWSGI ------------------------------------------------------------------------------------


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on", "y", "t", "")


def _parse_uwsgi_ini(path: str, section: str = "uwsgi") -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    current = None
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            line = raw.strip()
            if not line or line.startswith((";", "#")):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = line[1:-1].strip()
                continue
            if current != section:
                continue
            key, sep, value = line.partition("=")
            key = key.strip().replace("_", "-")
            value = value.strip() if sep else "true"
            value = value.replace("%d", base + os.sep).replace("%%", "%")
            options.setdefault(key, []).append(value)
    if current is None and not options:
        raise TargetError(f"{path}: no [{section}] section (is it a uWSGI ini file?)")
    if not options:
        raise TargetError(f"{path}: the [{section}] section is empty or missing")
    return options


def _last(options: dict[str, list[str]], *keys: str) -> str | None:
    """The last value of the first of ``keys`` the ini sets (uWSGI's later-wins)."""
    for key in keys:
        if key in options:
            return options[key][-1]
    return None


def uwsgi_master(path: str) -> tuple[Master, str, str | None]:
    """(master, module-or-file, callable) from a uWSGI ini, after applying chdir/pythonpath."""
    options = _parse_uwsgi_ini(path)
    master = _uwsgi_settings(path, options)
    _apply_uwsgi_environment(options)
    callable_ = _last(options, "callable") or "application"
    module = _last(options, "module", "wsgi", "w")
    wsgi_file = _last(options, "wsgi-file", "file")
    _install_uwsgi_stub(options, _uwsgi_workers(options))
    if module:
        name, sep, attr = module.partition(":")
        master.app = module if sep else f"{module}:{callable_}"
        return master, name, attr if sep else callable_
    if wsgi_file:
        master.app = f"{wsgi_file}:{callable_}"
        return master, wsgi_file, callable_
    raise TargetError(f"{path}: no `module`, `wsgi` or `wsgi-file` option: no app to import")


def _uwsgi_workers(options: dict[str, list[str]]) -> int:
    return int(_last(options, "processes", "workers", "p") or "1")


def _uwsgi_settings(path: str, options: dict[str, list[str]]) -> Master:
    """Workers, threads, preloading (lazy-apps) and whether the master forks at all."""
    master = Master(server="uwsgi", config=path)
    workers = _uwsgi_workers(options)
    master.workers = workers
    threads = _last(options, "threads")
    master.threads = int(threads) if threads else None
    lazy_apps = _last(options, "lazy-apps")
    lazy = _last(options, "lazy")
    master.preload = not (
        (lazy_apps is not None and _truthy(lazy_apps)) or (lazy and _truthy(lazy))
    )
    is_master = _last(options, "master", "M")
    master.forks = workers > 1 or (is_master is not None and _truthy(is_master))
    if not master.preload:
        master.notes.append(
            "lazy-apps is on: uWSGI forks the workers first and each imports the app itself"
        )
    if not master.forks:
        master.notes.append("one process and no master: uWSGI never forks")
    return master


def _apply_uwsgi_environment(options: dict[str, list[str]]) -> None:
    chdir = _last(options, "chdir")
    if chdir:
        os.chdir(chdir)
    for entry in options.get("pythonpath", []) + options.get("python-path", []):
        sys.path.insert(0, os.path.abspath(entry))
    _set_environ(options.get("env", []))


def _install_uwsgi_stub(options: dict[str, list[str]], workers: int) -> None:
    """``import uwsgi`` only works inside uWSGI; apps (and uwsgidecorators) import it at import."""
    if "uwsgi" in sys.modules:
        return
    stub = types.ModuleType("uwsgi")
    stub.__doc__ = "forkguard doctor's stand-in for uWSGI's embedded module (master process)"
    pid = os.getpid()
    stub_dict: dict[str, Any] = {
        "opt": {k: (v[-1] if len(v) == 1 else v) for k, v in options.items()},
        "numproc": workers,
        "masterpid": lambda: pid,
        "worker_id": lambda: 0,
        "mule_id": lambda: 0,
        "signal_registered": lambda signum: False,
        "register_signal": lambda *a: None,
        "add_timer": lambda *a: None,
        "add_rb_timer": lambda *a: None,
        "add_file_monitor": lambda *a: None,
        "lock": lambda *a: None,
        "unlock": lambda *a: None,
        "cache_get": lambda *a: None,
        "cache_set": lambda *a: None,
        "version": b"2.0 (forkguard doctor stand-in)",
        "post_fork_hook": None,
        "SPOOL_OK": -2,
        "SPOOL_RETRY": -1,
        "SPOOL_IGNORE": 0,
    }
    for name, value in stub_dict.items():
        setattr(stub, name, value)
    sys.modules["uwsgi"] = stub
