"""The process ``forkguard doctor`` imports the target in: a stand-in for the pre-fork master.

Run as ``python -m forkguard.doctor.probe --spec JSON --out FILE``. Before anything of the
user's runs, it installs recorders (they change nothing the app can observe):

* the DB-API ``connect`` functions of the drivers that are installed are wrapped, so every
  connection is recorded with the user's ``file:line`` and stack and with its arguments (to ask
  its server for ``max_connections`` / ``wait_timeout`` later, over a separate connection);
* an audit hook records where every Python socket was connected or bound;
* ``threading.Thread.start`` and ``sqlalchemy.create_engine`` record their caller.

Then it loads the target the way the master would (a gunicorn config is executed and its
``wsgi_app`` / ``preload_app`` / ``workers`` read; a uWSGI ini is parsed for ``module`` /
``wsgi-file`` / ``processes`` / ``lazy-apps``), lists what is still open, and writes the facts
as JSON to ``--out``. The judging is done by the parent (:mod:`forkguard.doctor.findings`).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import gc
import importlib
import importlib.util
import json
import logging
import os
import socket
import sys
import threading
import time
import traceback
import types
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .. import _drivers, _origin, _procfs

log = logging.getLogger("forkguard.doctor")

_FORKGUARD_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__))) + os.sep

# ---- where in the user's code ----------------------------------------------------------------


def _is_user(frame: types.FrameType) -> bool:
    if os.path.realpath(frame.f_code.co_filename).startswith(_FORKGUARD_DIR):
        return False
    return _origin.is_user_frame(frame)


def _frames(frame: types.FrameType | None) -> Iterator[types.FrameType]:
    """``frame`` and its callers, then on into the parent greenlets: SQLAlchemy's asyncio
    engines run their sync code (pool checkouts) in a child greenlet whose stack ends there."""
    glet = None
    greenlet = sys.modules.get("greenlet")
    if greenlet is not None:
        glet = greenlet.getcurrent()
    while True:
        while frame is not None:
            yield frame
            frame = frame.f_back
        glet = getattr(glet, "parent", None)
        if glet is None:
            return
        frame = glet.gr_frame


def _site_and_stack(skip: int = 2) -> tuple[str | None, list[str]]:
    frames = list(_frames(sys._getframe(skip)))
    site = next((f"{f.f_code.co_filename}:{f.f_lineno}" for f in frames if _is_user(f)), None)
    summary = traceback.StackSummary.extract((f, f.f_lineno) for f in reversed(frames))
    stack = traceback.format_list(summary)
    # Drop the probe's own frames at the top of the stack: they are noise in a user's report.
    while stack and (_FORKGUARD_DIR in stack[0] or "<frozen runpy>" in stack[0]):
        stack.pop(0)
    return site, stack


def _tb_site(tb: types.TracebackType | None) -> str | None:
    """The innermost user frame of a traceback."""
    site = None
    while tb is not None:
        if _is_user(tb.tb_frame):
            site = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return site


# ---- recorders -------------------------------------------------------------------------------


@dataclass(eq=False)
class ConnRecord:
    driver: str
    site: str | None
    stack: list[str]
    phase: str
    reconnect: Callable[[], Any] | None
    ref: weakref.ref[Any] | None = None
    strong: Any = None

    def get(self) -> Any:
        if self.ref is not None:
            return self.ref()
        return self.strong


@dataclass
class SocketRecord:
    event: str
    address: str
    site: str | None
    stack: list[str]
    phase: str


@dataclass
class Recorder:
    phase: str = "startup"
    enabled: bool = True
    connections: list[ConnRecord] = field(default_factory=list)
    sockets: dict[int, SocketRecord] = field(default_factory=dict)  # by socket inode
    engine_sites: dict[int, tuple[str | None, list[str]]] = field(default_factory=dict)
    thread_sites: dict[int, tuple[str | None, list[str], str]] = field(default_factory=dict)
    engines: list[weakref.ref[Any]] = field(default_factory=list)
    # pool record -> where in the user's code it was last checked out (who holds it now)
    checkouts: weakref.WeakKeyDictionary[Any, tuple[str | None, list[str]]] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    def add_connection(self, conn: Any, reconnect: Callable[[], Any] | None) -> None:
        if not self.enabled or conn is None:
            return
        for rec in self.connections:
            if rec.get() is conn:
                return
        site, stack = _site_and_stack(3)
        rec = ConnRecord(
            driver=_drivers.driver_name(conn),
            site=site,
            stack=stack,
            phase=self.phase,
            reconnect=reconnect,
        )
        try:
            rec.ref = weakref.ref(conn)
        except TypeError:
            rec.strong = conn  # sqlite3: checked with sys.getrefcount later
        self.connections.append(rec)


recorder = Recorder()
_gunicorn_config: dict[str, Any] = {}

_DRIVER_CONNECTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pymysql", ("connect", "Connect")),
    ("MySQLdb", ("connect", "Connect", "Connection")),
    ("psycopg2", ("connect",)),
    ("psycopg", ("connect",)),
    ("sqlite3", ("connect",)),
    ("mysql.connector", ("connect", "Connect")),
)


def _wrap_connect(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def connect(*args: Any, **kwargs: Any) -> Any:
        conn = original(*args, **kwargs)
        recorder.add_connection(conn, functools.partial(original, *args, **kwargs))
        return conn

    connect.__forkguard_doctor__ = True  # type: ignore[attr-defined]
    return connect


def _wrap_async_connect(original: Callable[..., Any]) -> Callable[..., Any]:
    """The same for a driver whose connect is a coroutine function (asyncpg, aiomysql)."""

    @functools.wraps(original)
    async def connect(*args: Any, **kwargs: Any) -> Any:
        conn = await original(*args, **kwargs)
        recorder.add_connection(conn, None)  # the limits are asked through the engine
        return conn

    connect.__forkguard_doctor__ = True  # type: ignore[attr-defined]
    return connect


# Looked up at call time: asyncpg.connect by SQLAlchemy's dialect, asyncpg.connection.connect
# by asyncpg's own pools; aiomysql.connect() (not a coroutine) awaits connection._connect.
_ASYNC_CONNECTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("asyncpg", ("connect",)),
    ("asyncpg.connection", ("connect",)),
    ("aiomysql.connection", ("_connect",)),
)


def _install_async_driver_hooks() -> list[str]:
    hooked = []
    for module_name, attrs in _ASYNC_CONNECTS:
        module = _optional_module(module_name)
        if module is None:
            continue
        for attr in attrs:
            original = getattr(module, attr, None)
            if original is not None and not getattr(original, "__forkguard_doctor__", False):
                setattr(module, attr, _wrap_async_connect(original))
        hooked.append(module_name.split(".")[0])
    return sorted(set(hooked))


def _optional_module(module_name: str) -> types.ModuleType | None:
    if importlib.util.find_spec(module_name.split(".")[0]) is None:
        return None
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # a broken optional driver must not stop the probe
        log.debug("forkguard doctor: cannot import %s: %s", module_name, exc)
        return None


def _install_driver_hooks() -> list[str]:
    hooked = []
    for module_name, attrs in _DRIVER_CONNECTS:
        module = _optional_module(module_name)
        if module is None:
            continue
        wrapped: dict[int, Callable[..., Any]] = {}
        for attr in attrs:
            original = getattr(module, attr, None)
            if original is None or getattr(original, "__forkguard_doctor__", False):
                continue
            if id(original) not in wrapped:
                wrapped[id(original)] = _wrap_connect(original)
            setattr(module, attr, wrapped[id(original)])
        hooked.append(module_name)
        if module_name == "psycopg":
            _hook_psycopg_classmethod(module)
    return hooked


def _hook_psycopg_classmethod(module: Any) -> None:
    # Django (and others) call psycopg.Connection.connect(), not psycopg.connect().
    cls = module.Connection
    descriptor = cls.__dict__.get("connect")
    func = getattr(descriptor, "__func__", None)
    if func is None:
        return

    def connect(klass: Any, *args: Any, **kwargs: Any) -> Any:
        conn = func(klass, *args, **kwargs)
        recorder.add_connection(conn, functools.partial(func, klass, *args, **kwargs))
        return conn

    cls.connect = classmethod(connect)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event not in ("socket.connect", "socket.bind") or not recorder.enabled:
        return
    try:
        sock, address = args[0], args[1]
        inode = os.fstat(sock.fileno()).st_ino
        site, stack = _site_and_stack(2)
        recorder.sockets[inode] = SocketRecord(
            event=event.split(".")[1],
            address=_format_address(address),
            site=site,
            stack=stack,
            phase=recorder.phase,
        )
    except Exception:  # an audit hook that raises would break the app's own connect()
        log.debug("forkguard doctor: cannot record %s", event, exc_info=True)


def _install_thread_hook() -> None:
    original = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if recorder.enabled:
            site, stack = _site_and_stack(2)
            recorder.thread_sites[id(self)] = (site, stack, recorder.phase)
        original(self)

    threading.Thread.start = start  # type: ignore[method-assign]


def _install_sqlalchemy_hook() -> None:
    if importlib.util.find_spec("sqlalchemy") is None:
        return
    import sqlalchemy
    import sqlalchemy.engine
    import sqlalchemy.engine.create
    import sqlalchemy.event
    import sqlalchemy.pool

    original = sqlalchemy.engine.create.create_engine

    @functools.wraps(original)
    def create_engine(*args: Any, **kwargs: Any) -> Any:
        engine = original(*args, **kwargs)
        if recorder.enabled:
            recorder.engine_sites[id(engine)] = _site_and_stack(2)
            recorder.engines.append(weakref.ref(engine))
        return engine

    for module in (sqlalchemy, sqlalchemy.engine, sqlalchemy.engine.create):
        module.create_engine = create_engine  # type: ignore[attr-defined]
    sqlalchemy.event.listen(sqlalchemy.pool.Pool, "checkout", _on_checkout)


def _on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Every pool checkout: the line that took the connection (a Connection, a Session)."""
    if recorder.enabled:
        recorder.checkouts[record] = _site_and_stack(2)


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


# ---- loading the target like the master does -----------------------------------------------


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


def _uwsgi_master(path: str) -> tuple[Master, str, str | None]:
    """(master, module-or-file, callable) from a uWSGI ini, after applying chdir/pythonpath."""
    options = _parse_uwsgi_ini(path)

    def last(*keys: str) -> str | None:
        for key in keys:
            if key in options:
                return options[key][-1]
        return None

    master = Master(server="uwsgi", config=path)
    workers = int(last("processes", "workers", "p") or "1")
    master.workers = workers
    threads = last("threads")
    master.threads = int(threads) if threads else None
    lazy_apps = last("lazy-apps")
    lazy = last("lazy")
    master.preload = not (
        (lazy_apps is not None and _truthy(lazy_apps)) or (lazy and _truthy(lazy))
    )
    is_master = last("master", "M")
    master.forks = workers > 1 or (is_master is not None and _truthy(is_master))
    if not master.preload:
        master.notes.append(
            "lazy-apps is on: uWSGI forks the workers first and each imports the app itself"
        )
    if not master.forks:
        master.notes.append("one process and no master: uWSGI never forks")
    chdir = last("chdir")
    if chdir:
        os.chdir(chdir)
    for entry in options.get("pythonpath", []) + options.get("python-path", []):
        sys.path.insert(0, os.path.abspath(entry))
    for env in options.get("env", []):
        key, _, value = env.partition("=")
        os.environ[key] = value
    callable_ = last("callable") or "application"
    module = last("module", "wsgi", "w")
    wsgi_file = last("wsgi-file", "file")
    _install_uwsgi_stub(options, workers)
    if module:
        name, sep, attr = module.partition(":")
        master.app = module if sep else f"{module}:{callable_}"
        return master, name, attr if sep else callable_
    if wsgi_file:
        master.app = f"{wsgi_file}:{callable_}"
        return master, wsgi_file, callable_
    raise TargetError(f"{path}: no `module`, `wsgi` or `wsgi-file` option: no app to import")


def _gunicorn_master(path: str, target: str | None) -> tuple[Master, str]:
    """Execute a gunicorn config file as gunicorn does and read the settings that matter."""
    spec = importlib.util.spec_from_file_location("__config__", path)
    if spec is None or spec.loader is None:
        raise TargetError(f"{path}: not a Python file gunicorn could load")
    module = importlib.util.module_from_spec(spec)
    recorder.phase = "config"
    spec.loader.exec_module(module)  # user code: its exceptions are import errors
    recorder.phase = "startup"
    cfg = module.__dict__
    _gunicorn_config.update(cfg)
    master = Master(server="gunicorn", config=path)
    master.preload = bool(cfg.get("preload_app", False))
    workers = cfg.get("workers", int(os.environ.get("WEB_CONCURRENCY", "1")))
    master.workers = int(workers)
    master.threads = int(cfg["threads"]) if "threads" in cfg else None
    chdir = cfg.get("chdir")
    if chdir:
        os.chdir(str(chdir))
        sys.path.insert(0, os.path.abspath(str(chdir)))
    pythonpath = cfg.get("pythonpath")
    if pythonpath:
        for entry in reversed(str(pythonpath).split(",")):
            sys.path.insert(0, os.path.abspath(entry.strip()))
    for env in cfg.get("raw_env", []) or []:
        key, _, value = str(env).partition("=")
        os.environ[key] = value
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
    return master, str(app)


def _import_path(path: str) -> types.ModuleType:
    """Import a ``.py`` file under its own module name, its directory first on sys.path."""
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise TargetError(f"no such file: {path}")
    directory, filename = os.path.split(path)
    sys.path.insert(0, directory)
    name = filename[:-3] if filename.endswith(".py") else filename
    if name == "__init__":
        directory, name = os.path.split(directory)
        sys.path[0] = directory
    return importlib.import_module(name)


def _resolve_attr(module: types.ModuleType, expr: str) -> Any:
    """``app``, ``create_app()`` or ``create_app('prod')``, as gunicorn's import_app does."""
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError as exc:
        raise TargetError(f"cannot parse {expr!r} as an attribute name or function call") from exc
    if isinstance(node, ast.Name):
        name, call = node.id, None
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        try:
            call = (
                [ast.literal_eval(a) for a in node.args],
                {str(k.arg): ast.literal_eval(k.value) for k in node.keywords},
            )
        except ValueError as exc:
            raise TargetError(f"the arguments in {expr!r} must be literals") from exc
    else:
        raise TargetError(f"cannot parse {expr!r} as an attribute name or function call")
    if not hasattr(module, name):
        raise TargetError(f"module {module.__name__!r} has no attribute {name!r}")
    obj = getattr(module, name)
    if call is not None:
        obj = obj(*call[0], **call[1])
    return obj


def _looks_like_django_settings(module: types.ModuleType) -> bool:
    return hasattr(module, "INSTALLED_APPS") and hasattr(module, "DATABASES")


def _load(spec: dict[str, Any]) -> Master:
    kind = spec["kind"]
    target: str | None = spec.get("target")
    for entry in reversed(spec.get("pythonpath") or []):
        sys.path.insert(0, os.path.abspath(entry))
    if kind == "gunicorn":
        master, target = _gunicorn_master(spec["config"], target)
        attr_required = True
    elif kind == "uwsgi":
        master, name, callable_ = _uwsgi_master(spec["config"])
        recorder.phase = "app"
        module = _import_path(name) if name.endswith(".py") else importlib.import_module(name)
        if callable_ and not hasattr(module, callable_):
            raise TargetError(
                f"uWSGI would find no callable {callable_!r} in {module.__name__!r} "
                "(set `callable = ...` in the ini)"
            )
        return master
    else:
        master = Master(server="python")
        attr_required = False
    recorder.phase = "app"
    assert target is not None
    if kind == "path" or (target.endswith(".py") and ":" not in target):
        module_part, attr = target, None
    else:
        module_part, _, attr_str = target.partition(":")
        attr = attr_str or None
    if module_part.endswith(".py") or os.sep in module_part:
        module = _import_path(module_part)
    else:
        module = importlib.import_module(module_part)
    if attr:
        _resolve_attr(module, attr)
    elif attr_required and kind == "gunicorn" and hasattr(module, "application") is False:
        master.notes.append(
            f"gunicorn would look for `application` in {module.__name__!r}, which it lacks"
        )
    if not attr and _looks_like_django_settings(module) and importlib.util.find_spec("django"):
        # A settings module: do what its wsgi.py would, DJANGO_SETTINGS_MODULE then the app.
        os.environ["DJANGO_SETTINGS_MODULE"] = module.__name__
        from django.core.wsgi import get_wsgi_application

        get_wsgi_application()
        master.notes.append(
            f"{module.__name__} is a Django settings module: loaded as its wsgi.py would "
            "(django.setup() and get_wsgi_application())"
        )
    return master


# ---- what is open after import ---------------------------------------------------------------


def _format_address(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    if isinstance(address, bytes):
        return address.decode(errors="replace") or "(unnamed)"
    return str(address) if address else "(unnamed)"


def _is_open(conn: Any) -> bool:
    conn = _drivers.unwrap(conn)
    module = type(conn).__module__.split(".", 1)[0]
    try:
        if module in ("pymysql", "MySQLdb"):
            return bool(conn.open)
        if module == "psycopg2":
            return int(conn.closed) == 0
        if module == "psycopg":
            return not bool(conn.closed)
        if module == "sqlite3":
            conn.total_changes  # noqa: B018 - raises ProgrammingError once closed
            return True
        if module == "mysql":
            return bool(conn.is_connected())
        if module == "asyncpg":
            return not bool(conn.is_closed())
        if module == "aiomysql":
            return not bool(conn.closed)
        return _drivers.known_fd(conn) is not None
    except Exception as exc:  # every driver raises its own error type for "closed"
        log.debug("forkguard doctor: %r looks closed: %s", conn, exc)
        return False


def _fd_of(conn: Any) -> int | None:
    try:
        return _drivers.known_fd(conn)
    except Exception as exc:
        log.debug("forkguard doctor: no fd for %r: %s", conn, exc)
        return None


@contextlib.contextmanager
def _dup_socket(fd: int) -> Iterator[socket.socket]:
    sock = socket.socket(fileno=os.dup(fd))
    try:
        yield sock
    finally:
        sock.close()


def _socket_facts(fd: int) -> dict[str, Any]:
    facts: dict[str, Any] = {"fd": fd}
    try:
        with _dup_socket(fd) as sock:
            facts["family"] = sock.family.name
            facts["type"] = sock.type.name
            facts["local"] = _format_address(sock.getsockname())
            try:
                facts["peer"] = _format_address(sock.getpeername())
            except OSError:
                facts["peer"] = None
            facts["listening"] = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError as exc:
        facts["error"] = str(exc)
    return facts


def _inode(fd: int | None) -> int | None:
    if fd is None:
        return None
    try:
        return os.fstat(fd).st_ino
    except OSError:
        return None


def _engine_facts(engine: Any) -> dict[str, Any]:
    pool = engine.pool
    url = engine.url
    size: int | None = None
    overflow: int | None = None
    if hasattr(pool, "_max_overflow") and callable(getattr(pool, "size", None)):
        size = int(pool.size())
        overflow = int(pool._max_overflow)
    backend = url.get_backend_name()
    site, stack = recorder.engine_sites.get(id(engine), (None, []))
    return {
        "url": url.render_as_string(hide_password=True),
        "backend": backend,
        "driver": url.get_driver_name(),
        "server": _server_key_from_url(url),
        "pool": type(pool).__name__,
        "pool_size": size,
        "max_overflow": overflow,
        "pool_recycle": int(pool._recycle),
        "pool_pre_ping": bool(pool._pre_ping),
        "created_at": site,
        "created_stack": stack,
    }


_ASYNC_DRIVERS = ("asyncpg", "aiomysql")


def _family(backend: str) -> str | None:
    if backend in ("mysql", "mariadb"):
        return "mysql"
    if backend == "postgresql":
        return "postgresql"
    return None


def _server_key_from_url(url: Any) -> str | None:
    family = _family(url.get_backend_name())
    if family is None:
        return None
    host = url.host or "localhost"
    port = url.port or _drivers.DEFAULT_PORTS[family]
    socket_path = url.query.get("unix_socket") or url.query.get("host")
    if socket_path and str(socket_path).startswith("/"):
        return f"{family}://{socket_path}"
    return f"{family}://{host}:{port}"


def _server_key_for_conn(driver: str, peer: str | None) -> str | None:
    family = {
        "PyMySQL": "mysql",
        "mysqlclient": "mysql",
        "mysql-connector-python": "mysql",
        "psycopg2": "postgresql",
        "psycopg 3": "postgresql",
        "asyncpg": "postgresql",
        "aiomysql": "mysql",
    }.get(driver)
    if family is None or not peer:
        return None
    return f"{family}://{peer}"


@dataclass
class _Pooled:
    engine: Any
    record: Any
    checked_out: bool


def _sa_records() -> dict[int, _Pooled]:
    """id(DB-API connection) -> its pool entry, for every pooled connection. An asyncio
    engine pools an adapter: the driver's connection inside it is keyed too."""
    if "sqlalchemy" not in sys.modules:
        return {}
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool.base import _ConnectionRecord

    engines = {id(e.pool): e for e in _all_engines() if isinstance(e, Engine)}
    found: dict[int, _Pooled] = {}
    for obj in gc.get_objects():
        if isinstance(obj, _ConnectionRecord) and obj.dbapi_connection is not None:
            pool = getattr(obj, "_ConnectionRecord__pool", None)
            checked_out = obj.fairy_ref is not None and obj.fairy_ref() is not None
            entry = _Pooled(engines.get(id(pool)), obj, checked_out)
            found[id(obj.dbapi_connection)] = entry
            found[id(_drivers.unwrap(obj.dbapi_connection))] = entry
    return found


def _all_engines() -> list[Any]:
    if "sqlalchemy" not in sys.modules:
        return []
    from sqlalchemy.engine import Engine

    seen: dict[int, Any] = {}
    for ref in recorder.engines:
        engine = ref()
        if engine is not None:
            seen[id(engine)] = engine
    for obj in gc.get_objects():
        if isinstance(obj, Engine):
            seen.setdefault(id(obj), obj)
    return list(seen.values())


def _forkguard_guards(conn: Any, pooled: _Pooled | None) -> bool:
    from .. import _registry

    if pooled is not None and _registry.lookup(pooled.record.dbapi_connection) is not None:
        return True  # an asyncio engine's adapter is what forkguard tracks
    return _registry.lookup(conn) is not None


def _collect_connections(db_inodes: set[int]) -> list[tuple[dict[str, Any], ConnRecord]]:
    pooled = _sa_records()
    result: list[tuple[dict[str, Any], ConnRecord]] = []
    for rec in list(recorder.connections):
        conn = rec.get()
        if conn is None:
            continue
        # sqlite3 takes no weak reference: if only we hold it, the app already dropped it.
        if rec.strong is not None and sys.getrefcount(conn) <= 3:
            continue
        if not _is_open(conn):
            continue
        entry = _connection_entry(rec, conn, pooled.get(id(conn)))
        inode = _inode(entry["fd"])
        if inode is not None:
            db_inodes.add(inode)
        result.append((entry, rec))
    return result


def _connection_entry(rec: ConnRecord, conn: Any, pooled: _Pooled | None) -> dict[str, Any]:
    fd = _fd_of(conn)
    sock = _socket_facts(fd) if fd is not None else {}
    peer = sock.get("peer")
    engine = pooled.engine if pooled is not None else None
    entry: dict[str, Any] = {
        "driver": rec.driver,
        "server": peer,
        "server_key": (
            _server_key_from_url(engine.url)
            if engine is not None
            else _server_key_for_conn(rec.driver, peer)
        ),
        "url": engine.url.render_as_string(hide_password=True) if engine is not None else None,
        "engine": id(engine) if engine is not None else None,
        "asyncio": rec.driver in _ASYNC_DRIVERS,
        "pooled": pooled is not None,
        "checked_out": bool(pooled and pooled.checked_out),
        "state": "raw DB-API connection",
        "opened_at": rec.site,
        "stack": rec.stack,
        "checked_out_at": None,
        "checkout_stack": [],
        "phase": rec.phase,
        "fd": fd,
        "socket": sock,
        "protected_by_forkguard": _forkguard_guards(conn, pooled),
        "django_alias": _django_alias(conn),
    }
    if pooled is not None:
        entry["state"] = "idle in pool"
    if pooled is not None and pooled.checked_out:
        entry["state"] = "checked out (held by a Session or Connection)"
        site, stack = recorder.checkouts.get(pooled.record, (None, []))
        entry["checked_out_at"], entry["checkout_stack"] = site, stack
    if entry["django_alias"]:
        entry["state"] = f"held by Django (connections[{entry['django_alias']!r}])"
    if rec.driver == "sqlite3":
        entry["server"] = "(a database file)"
    return entry


def _django_alias(conn: Any) -> str | None:
    if "django.db" not in sys.modules:
        return None
    from django.db import connections

    for alias in connections:
        wrapper = connections[alias]
        if getattr(wrapper, "connection", None) is conn:
            return str(alias)
    return None


def _collect_threads() -> list[dict[str, Any]]:
    result = []
    main = threading.main_thread()
    for thread in threading.enumerate():
        if thread is main:
            continue
        site, stack, phase = recorder.thread_sites.get(id(thread), (None, [], "unknown"))
        target = getattr(thread, "_target", None)
        result.append(
            {
                "name": thread.name,
                "daemon": thread.daemon,
                "target": getattr(target, "__qualname__", None) if target is not None else None,
                "class": f"{type(thread).__module__}.{type(thread).__qualname__}",
                "started_at": site,
                "stack": stack,
                "phase": phase,
            }
        )
    return result


def _loop_socket_inodes() -> set[int]:
    """The self-pipe sockets of event loops: reported with the loop, not as sockets."""
    inodes: set[int] = set()
    if "asyncio" not in sys.modules:
        return inodes
    import asyncio

    for obj in gc.get_objects():
        if isinstance(obj, asyncio.AbstractEventLoop) and not obj.is_closed():
            for attr in ("_ssock", "_csock"):
                sock = getattr(obj, attr, None)
                inode = _inode(sock.fileno()) if sock is not None else None
                if inode is not None:
                    inodes.add(inode)
    return inodes


def _socket_inodes() -> dict[int, int]:
    """fd -> socket inode for every socket this process has open (Linux /proc)."""
    return _procfs.socket_inodes() or {}


def _collect_sockets(db_inodes: set[int]) -> list[dict[str, Any]]:
    result = []
    db_inodes = db_inodes | _loop_socket_inodes()
    for fd, inode in sorted(_socket_inodes().items()):
        if inode in db_inodes or fd <= 2:
            continue
        facts = _socket_facts(fd)
        record = recorder.sockets.get(inode)
        facts["opened_at"] = record.site if record else None
        facts["stack"] = record.stack if record else []
        facts["phase"] = record.phase if record else "unknown"
        if record is not None and not facts.get("peer") and record.event == "connect":
            facts["peer"] = record.address
        result.append(facts)
    return result


def _collect_loops() -> list[dict[str, Any]]:
    if "asyncio" not in sys.modules:
        return []
    import asyncio

    result = []
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.AbstractEventLoop) and not obj.is_closed():
            result.append({"class": type(obj).__name__, "running": obj.is_running()})
    return result


def _hook_facts(fn: Any, source: str) -> dict[str, Any]:
    import inspect

    fn = getattr(fn, "f", fn)  # uwsgidecorators.postfork wraps the function in .f
    fact: dict[str, Any] = {"name": getattr(fn, "__qualname__", repr(fn)), "source": source}
    try:
        code = inspect.getsource(fn)
        fact["defined_at"] = f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
    except (OSError, TypeError) as exc:
        log.debug("forkguard doctor: no source for hook %r: %s", fn, exc)
        code = ""
    fact["calls_dispose"] = ".dispose(" in code
    fact["calls_install"] = _calls_forkguard_install(fn, code)
    fact["dispose_close_false"] = "close=False" in code
    fact["closes_sessions"] = any(
        w in code for w in ("close_all", ".remove(", "close_all_sessions")
    )
    return fact


def _calls_forkguard_install(fn: Any, code: str) -> bool:
    """``forkguard.install()`` (or ``forkguard.asyncio.install()``, or ``install()`` imported
    from forkguard) in a hook's source."""
    if "install(" not in code:
        return False
    if "forkguard" in code:
        return True
    install = getattr(fn, "__globals__", {}).get("install")
    return str(getattr(install, "__module__", "")).startswith("forkguard")


def _collect_postfork_hooks(config: dict[str, Any]) -> list[dict[str, Any]]:
    hooks = []
    decorators = sys.modules.get("uwsgidecorators")
    for fn in getattr(decorators, "postfork_chain", []) if decorators is not None else []:
        hooks.append(_hook_facts(fn, "uwsgidecorators.postfork"))
    for name in ("post_fork", "post_worker_init"):
        if callable(config.get(name)):
            hooks.append(_hook_facts(config[name], f"gunicorn {name}"))
    return hooks


def _django_databases() -> list[dict[str, Any]]:
    if "django.conf" not in sys.modules:
        return []
    from django.conf import settings

    if not settings.configured:
        return []
    result = []
    for alias, cfg in settings.DATABASES.items():
        engine = str(cfg.get("ENGINE", ""))
        family = "mysql" if "mysql" in engine else "postgresql" if "postgres" in engine else None
        host = cfg.get("HOST") or "localhost"
        port = cfg.get("PORT") or (_drivers.DEFAULT_PORTS[family] if family else None)
        result.append(
            {
                "alias": alias,
                "engine": engine,
                "conn_max_age": cfg.get("CONN_MAX_AGE", 0),
                "health_checks": bool(cfg.get("CONN_HEALTH_CHECKS", False)),
                "server_key": f"{family}://{host}:{port}" if family else None,
            }
        )
    return result


# ---- asking each server for its limits (over a connection that is not counted) ---------------


def _query_mysql(conn: Any) -> dict[str, Any]:
    cur = conn.cursor()
    cur.execute("SELECT VERSION(), @@GLOBAL.max_connections, @@SESSION.wait_timeout")
    version, max_connections, wait_timeout = cur.fetchone()
    cur.close()
    return {
        "product": "MariaDB" if "mariadb" in str(version).lower() else "MySQL",
        "version": str(version),
        "max_connections": int(max_connections),
        "wait_timeout": int(wait_timeout),
    }


def _query_postgresql(conn: Any) -> dict[str, Any]:
    cur = conn.cursor()
    cur.execute(
        "SELECT name, setting FROM pg_settings WHERE name IN "
        "('max_connections', 'superuser_reserved_connections', 'idle_session_timeout', "
        "'server_version')"
    )
    rows = {str(name): str(value) for name, value in cur.fetchall()}
    cur.close()
    idle_ms = int(rows.get("idle_session_timeout", "0") or "0")
    return {
        "product": "PostgreSQL",
        "version": rows.get("server_version"),
        "max_connections": int(rows["max_connections"]),
        "reserved_connections": int(rows.get("superuser_reserved_connections", "0")),
        # seconds, like MySQL's wait_timeout; 0 = never
        "wait_timeout": idle_ms // 1000 if idle_ms else 0,
        "wait_timeout_setting": "idle_session_timeout",
    }


def _ask_server(family: str, opener: Callable[[], Any]) -> dict[str, Any]:
    try:
        conn = opener()
    except Exception as exc:
        return {"error": f"could not connect to ask for its limits: {type(exc).__name__}: {exc}"}
    try:
        return _query_mysql(conn) if family == "mysql" else _query_postgresql(conn)
    except Exception as exc:
        return {"error": f"could not read its limits: {type(exc).__name__}: {exc}"}
    finally:
        try:
            conn.close()
        except Exception:
            log.debug("forkguard doctor: closing the limits connection failed", exc_info=True)


def _ask_engine(family: str, engine: Any) -> dict[str, Any]:
    def open_engine() -> Any:
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        return engine.dialect.connect(*cargs, **cparams)

    if not getattr(engine.dialect, "is_async", False):
        return _ask_server(family, open_engine)
    # An asyncio dialect connects (and its cursors run) in a greenlet under a running loop.
    import asyncio

    from sqlalchemy.util import greenlet_spawn

    try:
        result: dict[str, Any] = asyncio.run(greenlet_spawn(_ask_server, family, open_engine))
    except Exception as exc:
        return {"error": f"could not ask for its limits: {type(exc).__name__}: {exc}"}
    return result


def _collect_servers(
    engines: list[Any], connections: list[dict[str, Any]], raw: dict[int, ConnRecord]
) -> dict[str, dict[str, Any]]:
    servers: dict[str, dict[str, Any]] = {}
    for engine in engines:
        key = _server_key_from_url(engine.url)
        if key is None or key in servers:
            continue
        servers[key] = _ask_engine(key.split(":", 1)[0], engine)
    for entry in connections:
        key = entry.get("server_key")
        rec = raw.get(id(entry))
        if key is None or key in servers or rec is None or rec.reconnect is None:
            continue
        servers[key] = _ask_server(key.split(":", 1)[0], rec.reconnect)
    return servers


# ---- main --------------------------------------------------------------------------------------


def _import_error(exc: BaseException) -> dict[str, Any]:
    location = _tb_site(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.filename:
        location = f"{exc.filename}:{exc.lineno}"
    message = str(exc)
    if isinstance(exc, SystemExit):
        message = f"the app called sys.exit({exc.code!r}) while being imported"
    return {
        "type": type(exc).__qualname__
        if type(exc).__module__ in ("builtins", "__main__")
        else f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": message,
        "location": location,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "target_error": isinstance(exc, TargetError),
        "cwd": os.getcwd(),
    }


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "probe_pid": os.getpid(),
        "python": sys.version.split()[0],
        "cwd": os.getcwd(),
    }
    hooked = _install_driver_hooks() + _install_async_driver_hooks()
    _install_sqlalchemy_hook()
    _install_thread_hook()
    sys.addaudithook(_audit)
    facts["drivers_hooked"] = hooked
    started = time.monotonic()
    master = Master()
    try:
        master = _load(spec)
    except TargetError as exc:
        facts["import_error"] = _import_error(exc)
    except BaseException as exc:  # the user's import failed: that is the report, not a crash
        facts["import_error"] = _import_error(exc)
    else:
        facts["import_error"] = None
    facts["import_seconds"] = round(time.monotonic() - started, 3)
    recorder.enabled = False
    facts["master"] = master.__dict__
    if facts["import_error"] is not None:
        return facts

    db_inodes: set[int] = set()
    pairs = _collect_connections(db_inodes)
    connections = [entry for entry, _ in pairs]
    raw_by_entry = {id(entry): rec for entry, rec in pairs}
    engines = _all_engines()
    facts["connections"] = connections
    facts["engines"] = {str(id(e)): _engine_facts(e) for e in engines}
    facts["threads"] = _collect_threads()
    facts["sockets"] = _collect_sockets(db_inodes)
    facts["event_loops"] = _collect_loops()
    facts["django_databases"] = _django_databases()
    facts["postfork_hooks"] = _collect_postfork_hooks(_gunicorn_config)
    for entry in connections:
        entry["engine"] = str(entry["engine"]) if entry["engine"] is not None else None
    facts["servers"] = _collect_servers(engines, connections, raw_by_entry)
    try:
        import forkguard

        facts["forkguard_installed"] = forkguard.is_installed()
    except ImportError:
        facts["forkguard_installed"] = False
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forkguard.doctor.probe")
    parser.add_argument("--spec", required=True, help="the target, as JSON")
    parser.add_argument("--out", required=True, help="where to write the facts (JSON)")
    args = parser.parse_args(argv)
    spec = json.loads(args.spec)  # the parent already started us in the right directory
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    facts = probe(spec)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(facts, fh, indent=1, default=str)
    _close_recorded()
    sys.stdout.flush()
    sys.stderr.flush()
    # Threads the app started at import may never end: leave like a killed master would, after
    # closing the connections we saw politely (no "aborted connection" in the server's log).
    os._exit(0)


def _close_recorded() -> None:
    for rec in recorder.connections:
        conn = rec.get()
        if conn is None:
            continue
        try:
            if rec.driver in _QUIT_MESSAGES:
                _say_goodbye(rec.driver, conn)
            else:
                conn.close()
        except Exception as exc:
            log.debug("forkguard doctor: closing %s failed: %s", rec.driver, exc)


# What an asyncio driver's close() sends (PostgreSQL Terminate, MySQL COM_QUIT). Its event
# loop is closed by now, so the bytes go straight to the socket; over TLS it is just closed.
_QUIT_MESSAGES = {"asyncpg": b"X\x00\x00\x00\x04", "aiomysql": b"\x01\x00\x00\x00\x01"}


def _say_goodbye(driver: str, conn: Any) -> None:
    inner = _drivers.unwrap(conn)
    writer = getattr(inner, "_writer", None)
    transport = getattr(inner, "_transport", None) or getattr(writer, "transport", None)
    fd = _fd_of(inner)
    if fd is None or transport is None or transport.get_extra_info("ssl_object") is not None:
        return
    os.write(fd, _QUIT_MESSAGES[driver])


if __name__ == "__main__":
    sys.exit(main())
