"""From the probe's facts to findings: what is wrong, how bad, and the concrete fix for each."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

SEVERITIES = ("error", "warning", "info")

# Exit codes of ``forkguard doctor``.
EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2


@dataclass
class Finding:
    """One thing the doctor saw. ``error`` and ``warning`` make the exit code 1."""

    kind: str
    severity: str
    title: str
    detail: str
    fix: str
    location: str | None = None
    stack: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Diagnosis:
    facts: dict[str, Any]
    findings: list[Finding]
    workers: int | None
    workers_source: str | None
    verdict: str  # clean | warnings | unsafe | import-error
    exit_code: int

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(SEVERITIES, 0)
        for finding in self.findings:
            counts[finding.severity] += 1
        return counts


def _who(workers: int | None) -> str:
    if workers is None:
        return "every worker inherits it"
    if workers == 1:
        return "the worker inherits it"
    return f"all {workers} workers inherit it"


@dataclass
class _Context:
    """What every connection finding needs to know about the master."""

    master: dict[str, Any]
    workers: int | None
    django: bool = False
    late_install: str | None = None  # a post-fork hook that calls forkguard.install()


def _where_to_install(master: dict[str, Any]) -> str:
    server = master.get("server")
    if server == "gunicorn":
        config = os.path.basename(str(master.get("config") or "gunicorn.conf.py"))
        return f"at the top of {config} (gunicorn runs it in the master, before it loads the app)"
    if server == "uwsgi":
        module = str(master.get("app") or "").partition(":")[0]
        return f"at the top of the module uWSGI loads ({module})"
    return "at the top of the module the server imports (your WSGI/ASGI module)"


def _install(ctx: _Context) -> str:
    """The one placement the doctor recommends: in the master, before the fork."""
    if ctx.django:
        return 'add "forkguard.django" to INSTALLED_APPS (`INSTALLED_APPS += ["forkguard.django"]`)'
    return f"add `import forkguard; forkguard.install()` {_where_to_install(ctx.master)}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


_HOLDERS = "a Connection, a Session, an app context never popped"


def _where(conn: dict[str, Any]) -> str:
    """Where the connection was opened and, if still checked out, the line holding it."""
    opened = conn.get("opened_at") or "an unknown line"
    held = conn.get("checked_out_at")
    if not conn.get("checked_out"):
        return f"Opened at {opened}."
    if held is None:
        return f"Opened at {opened}; still checked out ({_HOLDERS})."
    if held == opened:
        return f"Opened and checked out at {held}; what took it there ({_HOLDERS}) still holds it."
    return (
        f"Checked out at {held}; what took it there ({_HOLDERS}) still holds it. "
        f"First opened at {opened}."
    )


def _connection_finding(conn: dict[str, Any], ctx: _Context) -> Finding:
    held = conn.get("checked_out_at")
    base: dict[str, Any] = {
        "location": held or conn.get("opened_at"),
        "stack": (conn.get("checkout_stack") if held else conn.get("stack")) or [],
        "data": {k: conn.get(k) for k in _CONN_DATA},
    }
    driver, server = conn["driver"], conn.get("server") or "an unknown server"
    forks = ctx.master.get("forks", True)
    if not (forks and (ctx.master.get("preload", True) or conn.get("phase") == "config")):
        why = (
            "uWSGI never forks with this configuration"
            if not forks
            else "the master does not import the app (preload off / lazy-apps): each worker "
            "opens its own after the fork"
        )
        return Finding(
            kind="per-worker-connection",
            severity="info",
            title=f"{driver} connection to {server} opened at import, not inherited",
            detail=f"{_where(conn)} Safe here because {why}.",
            fix=(
                "Nothing to fix. To get preloading's memory savings and faster worker starts, "
                f"turn preloading on and {_install(ctx)}."
            ),
            **base,
        )
    guard = _guard(conn, ctx)
    if guard is not None:
        return Finding(
            kind="guarded-connection",
            severity="info",
            title=f"{driver} connection to {server} is open after import, guarded by forkguard",
            detail=f"{_where(conn)} {guard}",
            fix="Nothing to fix.",
            **base,
        )
    return Finding(
        kind="inherited-connection",
        severity="error",
        title=f"{driver} connection to {server} is open after import: {_who(ctx.workers)}",
        detail=_inherited_detail(conn),
        fix=_fix_for(conn, ctx),
        **base,
    )


_CONN_DATA = (
    "driver",
    "server",
    "url",
    "state",
    "phase",
    "django_alias",
    "asyncio",
    "opened_at",
    "checked_out_at",
)


def _guard(conn: dict[str, Any], ctx: _Context) -> str | None:
    """Why forkguard protects this connection in the workers, or None."""
    if conn.get("protected_by_forkguard"):
        return (
            "forkguard is installed: each worker drops its copy without sending a byte and "
            "opens its own."
        )
    if ctx.late_install is not None and (conn.get("pooled") or conn.get("django_alias")):
        return (
            f"forkguard.install() in the post-fork hook {ctx.late_install} protects it: each "
            "worker drops its copy without sending a byte and opens its own."
        )
    return None


def _inherited_detail(conn: dict[str, Any]) -> str:
    lines = [_where(conn)]
    if conn.get("url"):
        state = "" if conn.get("checked_out") else f", connection {conn['state']}"
        lines.append(f"Engine {conn['url']}{state}.")
    postgres = conn["driver"] in ("psycopg2", "psycopg 3", "asyncpg") or str(
        conn.get("server_key") or ""
    ).startswith("postgresql")
    errors = (
        "'server closed the connection unexpectedly' / 'SSL error: decryption failed or bad "
        "record mac'"
        if postgres
        else "'MySQL server has gone away' (2006) / 'Lost connection' (2013) / 'Commands out "
        "of sync' (2014)"
    )
    lines.append(
        "After the fork every worker holds the same socket: their queries interleave on one "
        "stream, so a worker can read another's rows (another user's data), get "
        f"{errors}, and one worker's close or garbage collection ends the session for all."
    )
    if conn.get("checked_out") and not conn.get("django_alias"):
        lines.append(
            "A post-fork engine.dispose() does not reach it: a worker that closes or "
            "garbage-collects its holder sends ROLLBACK over the shared socket, and the "
            "master's next COMMIT silently loses its rows."
        )
    return " ".join(lines)


def _dispose(conn: dict[str, Any]) -> str:
    if conn.get("asyncio"):
        return "`await engine.dispose()` inside the same asyncio.run()"
    return "`engine.dispose()` (Flask-SQLAlchemy: `db.engine.dispose()`)"


def _django_fix(conn: dict[str, Any], ctx: _Context) -> str:
    return (
        f"{_sentence(_install(ctx))}: each worker then drops the inherited connection without "
        f"sending a byte and opens its own. Without forkguard: Django opened it (alias "
        f"{conn['django_alias']!r}) while the app was imported; move that query out of import "
        "(AppConfig.ready(), module level, urls.py), or call "
        "`from django.db import connections; connections.close_all()` at the end of wsgi.py."
    )


def _sqlite_fix(conn: dict[str, Any], ctx: _Context) -> str:
    return (
        "A SQLite connection must never cross fork() (SQLite's 'How To Corrupt', 2.6): "
        "open it in each worker, after the fork (or per request), and close the import-time "
        "one before the server forks."
    )


def _with_forkguard(ctx: _Context) -> str:
    return (
        f"{_sentence(_install(ctx))}: each worker then drops its inherited copy without "
        "sending a byte and opens its own connection."
    )


def _checked_out_fix(conn: dict[str, Any], ctx: _Context) -> str:
    close = "`await conn.close()`" if conn.get("asyncio") else "`conn.close()`"
    return (
        f"{_with_forkguard(ctx)} Without forkguard: close its holder before the fork ({close}; "
        f"a Session: `db.session.remove()` / pop the app context), then call {_dispose(conn)}, "
        "in the master."
    )


def _pooled_fix(conn: dict[str, Any], ctx: _Context) -> str:
    where = conn.get("opened_at") or "import"
    return (
        f"{_with_forkguard(ctx)} Without forkguard: call {_dispose(conn)} right after the "
        f"import-time work, in the master; or move that work (the call at {where}: "
        "create_all(), a query) out of import, e.g. into a CLI command or a migration."
    )


def _raw_fix(conn: dict[str, Any], ctx: _Context) -> str:
    return (
        f"Open this {conn['driver']} connection in each worker (gunicorn `post_fork` hook, "
        "`uwsgidecorators.postfork`) or per request, or close it before the server forks. "
        "To keep it, wrap it: `forkguard.track(conn)` makes the workers' copies harmless."
    )


# The first rule that matches gives the fix for an unguarded inherited connection.
_FIX_RULES: tuple[
    tuple[Callable[[dict[str, Any]], bool], Callable[[dict[str, Any], _Context], str]], ...
] = (
    (lambda c: bool(c.get("django_alias")), _django_fix),
    (lambda c: c["driver"] == "sqlite3", _sqlite_fix),
    (lambda c: bool(c.get("checked_out")), _checked_out_fix),
    (lambda c: bool(c.get("pooled")), _pooled_fix),
    (lambda c: True, _raw_fix),
)


def _fix_for(conn: dict[str, Any], ctx: _Context) -> str:
    return next(fix(conn, ctx) for matches, fix in _FIX_RULES if matches(conn))


def _suggest_recycle(wait_timeout: int) -> int:
    return 3600 if wait_timeout > 3660 else max(1, int(wait_timeout * 0.9))


def _pool_findings(facts: dict[str, Any], workers: int | None) -> list[Finding]:
    findings: list[Finding] = []
    servers: dict[str, dict[str, Any]] = facts.get("servers") or {}
    engines: dict[str, dict[str, Any]] = facts.get("engines") or {}
    connections = facts.get("connections") or []
    by_server: dict[str, list[dict[str, Any]]] = {}
    for engine in engines.values():
        if engine.get("server"):
            by_server.setdefault(engine["server"], []).append(engine)

    for key, group in sorted(by_server.items()):
        info = servers.get(key) or {}
        if "max_connections" not in info:
            if info.get("error"):
                findings.append(
                    Finding(
                        kind="server-unreachable",
                        severity="info",
                        title=f"could not check {key}'s limits",
                        detail=str(info["error"]),
                        fix="Run the doctor where the database is reachable to check pool sizes.",
                    )
                )
            continue
        queued = [e for e in group if e.get("pool_size") is not None]
        unlimited = [e for e in queued if (e.get("max_overflow") or 0) < 0]
        for engine in unlimited:
            findings.append(
                Finding(
                    kind="pool-capacity",
                    severity="warning",
                    title=f"{engine['url']}: max_overflow=-1, no limit on connections per worker",
                    detail="Under load every worker can open any number of connections.",
                    fix="Set a finite max_overflow (e.g. 10) in create_engine().",
                    location=engine.get("created_at"),
                    data={"server": key},
                )
            )
        per_worker = sum(int(e["pool_size"]) + max(0, int(e["max_overflow"])) for e in queued)
        if not queued or unlimited:
            continue
        usable = int(info["max_connections"]) - int(info.get("reserved_connections", 0))
        in_master = sum(1 for c in connections if c.get("server_key") == key)
        first = queued[0]
        data = {
            "server": key,
            "max_connections": info["max_connections"],
            "usable": usable,
            "per_worker": per_worker,
            "workers": workers,
            "master_connections": in_master,
        }
        sizes = ", ".join(
            f"pool_size={e['pool_size']} + max_overflow={e['max_overflow']}" for e in queued
        )
        if workers is None:
            fits = usable // per_worker if per_worker else 0
            findings.append(
                Finding(
                    kind="pool-capacity",
                    severity="info",
                    title=f"{key}: each worker can open up to {per_worker} connections; "
                    f"max_connections={info['max_connections']} fits at most {fits} workers",
                    detail=f"{sizes}. The worker count is unknown.",
                    fix="Pass --workers N (or a server config with -c / --uwsgi) to check it.",
                    location=first.get("created_at"),
                    data=data,
                )
            )
            continue
        total = workers * per_worker + in_master
        data["total"] = total
        if total <= usable * 0.8:
            continue
        budget = max(1, (usable - in_master) // workers)
        size = max(1, budget * 2 // 3)
        severity = "error" if total > usable else "warning"
        findings.append(
            Finding(
                kind="pool-capacity",
                severity=severity,
                title=(
                    f"{key}: {workers} workers x {per_worker} connections"
                    + (f" + {in_master} in the master" if in_master else "")
                    + f" = {total} {'>' if total > usable else 'close to'} "
                    f"max_connections={info['max_connections']}"
                ),
                detail=(
                    f"{sizes} per worker. Under load the server refuses the rest: "
                    "'Too many connections' (1040) / 'sorry, too many clients already', for "
                    "every client of that server, not just this app."
                ),
                fix=(
                    f"Keep workers x (pool_size + max_overflow) under {usable}: e.g. "
                    f"create_engine(..., pool_size={size}, max_overflow={budget - size}) "
                    f"for {workers} workers; or raise max_connections on the server, run fewer "
                    "workers, or put a pooler (PgBouncer, ProxySQL) in between."
                ),
                location=first.get("created_at"),
                data=data,
            )
        )

    for engine in sorted(engines.values(), key=lambda e: str(e.get("url"))):
        info = servers.get(engine.get("server") or "") or {}
        wait = int(info.get("wait_timeout") or 0)
        if wait <= 0 or engine.get("pool_pre_ping") or engine.get("pool_size") is None:
            continue
        recycle = int(engine.get("pool_recycle", -1))
        if 0 <= recycle < wait:
            continue
        setting = info.get("wait_timeout_setting", "wait_timeout")
        suggest = _suggest_recycle(wait)
        findings.append(
            Finding(
                kind="pool-recycle",
                severity="warning",
                title=(
                    f"{engine['url']}: pooled connections outlive the server's {setting}={wait}s"
                ),
                detail=(
                    f"pool_recycle={recycle if recycle >= 0 else 'unset'}, pool_pre_ping=False: "
                    f"a connection left idle in a worker's pool for more than {wait}s has been "
                    "closed by the server, and the next request that takes it fails "
                    "('MySQL server has gone away' 2006, 'Lost connection' 2013, "
                    "'terminating connection due to idle-session timeout')."
                ),
                fix=(
                    f"create_engine(..., pool_recycle={suggest}, pool_pre_ping=True) "
                    "(Flask-SQLAlchemy: SQLALCHEMY_ENGINE_OPTIONS = "
                    f"{{'pool_recycle': {suggest}, 'pool_pre_ping': True}})."
                ),
                location=engine.get("created_at"),
                stack=engine.get("created_stack") or [],
                data={"server": engine.get("server"), "wait_timeout": wait, "recycle": recycle},
            )
        )

    for db in facts.get("django_databases") or []:
        info = servers.get(db.get("server_key") or "") or {}
        wait = int(info.get("wait_timeout") or 0)
        age = db.get("conn_max_age")
        if wait <= 0 or db.get("health_checks") or age == 0:
            continue
        if age is not None and int(age) < wait:
            continue
        findings.append(
            Finding(
                kind="django-conn-max-age",
                severity="warning",
                title=(
                    f"Django database {db['alias']!r}: CONN_MAX_AGE={age} outlives the "
                    f"server's wait_timeout={wait}s"
                ),
                detail="A persistent connection idle longer than that is closed by the server.",
                fix=(
                    f"Set CONN_MAX_AGE below {wait} or CONN_HEALTH_CHECKS = True in "
                    f"DATABASES[{db['alias']!r}]."
                ),
                data={"alias": db["alias"], "wait_timeout": wait},
            )
        )
    return findings


def _hazard_findings(facts: dict[str, Any], preloaded: bool) -> list[Finding]:
    findings = []
    severity = "warning" if preloaded else "info"
    for thread in facts.get("threads") or []:
        target = f" running {thread['target']}" if thread.get("target") else ""
        where = thread.get("started_at")
        findings.append(
            Finding(
                kind="thread-at-import",
                severity=severity,
                title=f"thread {thread['name']!r}{target} is running after import",
                detail=(
                    f"Started at {where or 'an unknown line'}. fork() copies only the calling "
                    "thread: in the workers this thread does not exist, and a lock it held at "
                    "the fork stays locked there forever (a deadlock on the first log line or "
                    "queue put). Python 3.12+ warns when a multi-threaded process forks."
                ),
                fix=(
                    "Start it in each worker after the fork (gunicorn `post_fork` / "
                    "`post_worker_init` hook, `uwsgidecorators.postfork`) or lazily on first "
                    "use, not at import."
                ),
                location=where,
                stack=thread.get("stack") or [],
                data={"name": thread["name"], "daemon": thread.get("daemon")},
            )
        )
    for sock in facts.get("sockets") or []:
        peer = sock.get("peer")
        local = sock.get("local")
        family = str(sock.get("family", "socket")).replace("AF_", "")
        if sock.get("listening"):
            title = f"listening {family} socket on {local} is open after import"
            detail = (
                "Every worker inherits it and accepts on it too: connections land in whichever "
                "process wins, including ones that never serve them."
            )
        else:
            title = f"{family} socket to {peer or '(unconnected)'} is open after import"
            detail = (
                "Every worker inherits the same socket: their messages interleave on one "
                "stream and one worker can read the reply meant for another (a cache, "
                "queue or HTTP client created at import)."
            )
        where = sock.get("opened_at")
        findings.append(
            Finding(
                kind="socket-at-import",
                severity=severity,
                title=title,
                detail=f"Opened at {where or 'an unknown line'}. {detail}",
                fix=(
                    "Create the client per worker (post-fork hook) or lazily on first use, or "
                    "close it before the fork."
                ),
                location=where,
                stack=sock.get("stack") or [],
                data={k: sock.get(k) for k in ("family", "type", "local", "peer", "listening")},
            )
        )
    for loop in facts.get("event_loops") or []:
        state = "running" if loop.get("running") else "created, not closed"
        findings.append(
            Finding(
                kind="event-loop",
                severity=severity,
                title=f"an asyncio event loop ({loop['class']}) is {state} after import",
                detail=(
                    "Its selector (epoll fd) and self-pipe are shared by every worker after the "
                    "fork: workers steal each other's wake-ups, and a loop running in a thread "
                    "is not running at all in the workers."
                ),
                fix=(
                    "Create the loop in each worker (asyncio.run() or new_event_loop() after the "
                    "fork), or close it (loop.close()) before the server forks."
                ),
                data=dict(loop),
            )
        )
    return findings


def _hook_findings(facts: dict[str, Any], ctx: _Context, preloaded: bool) -> list[Finding]:
    findings = []
    has_conns = bool(facts.get("connections"))
    for hook in facts.get("postfork_hooks") or []:
        if hook.get("calls_install"):
            findings.append(_late_install_finding(hook, ctx))
        if not hook.get("calls_dispose") or hook.get("dispose_close_false"):
            continue
        findings.append(
            Finding(
                kind="postfork-dispose",
                severity="warning" if preloaded and has_conns else "info",
                title=f"post-fork hook {hook['name']} ({hook['source']}) calls engine.dispose()",
                detail=(
                    "dispose() in a worker closes the connections it inherited: each close "
                    "sends COM_QUIT / Terminate over the socket the master and the other workers "
                    "share, so their next query fails ('MySQL server has gone away'). A session "
                    "still holding a connection is not reached at all."
                ),
                fix=(
                    f"{_sentence(_install(ctx))} and remove this dispose() from the hook. "
                    "Without forkguard: dispose the engine in the master, after the import-time "
                    "work and before the fork."
                ),
                location=hook.get("defined_at"),
                data=dict(hook),
            )
        )
    return findings


def _late_install_finding(hook: dict[str, Any], ctx: _Context) -> Finding:
    return Finding(
        kind="postfork-install",
        severity="info",
        title=f"post-fork hook {hook['name']} ({hook['source']}) calls forkguard.install()",
        detail=(
            "That works: each worker drops what it inherited when the hook runs. It is later "
            "than needed, and forkguard logs a warning in every worker asking to move it."
        ),
        fix=f"Move it into the master: {_install(ctx)}.",
        location=hook.get("defined_at"),
        data=dict(hook),
    )


def resolve_workers(facts: dict[str, Any], override: int | None) -> tuple[int | None, str | None]:
    if override is not None:
        return override, "--workers"
    master = facts.get("master") or {}
    if master.get("workers") is not None:
        return int(master["workers"]), f"{master.get('server')} config"
    return None, None


def _context(facts: dict[str, Any], workers: int | None) -> _Context:
    late = [h for h in facts.get("postfork_hooks") or [] if h.get("calls_install")]
    return _Context(
        master=facts.get("master") or {},
        workers=workers,
        django=bool(facts.get("django_databases")),
        late_install=f"{late[0]['name']} ({late[0]['source']})" if late else None,
    )


def _note_findings(ctx: _Context, preloaded: bool) -> list[Finding]:
    fix = f"Safe as it is. To preload (shared memory, fast worker starts) safely, {_install(ctx)}."
    return [
        Finding(
            kind="not-preloaded" if not preloaded else "note",
            severity="info",
            title=note,
            detail="Nothing the import opens is inherited by the workers." if not preloaded else "",
            fix=fix if not preloaded else "",
        )
        for note in ctx.master.get("notes") or []
    ]


def analyze(facts: dict[str, Any], workers: int | None = None) -> Diagnosis:
    """Judge the probe's facts; ``workers`` overrides the config's worker count."""
    count, source = resolve_workers(facts, workers)
    if facts.get("import_error"):
        return Diagnosis(facts, [], count, source, "import-error", EXIT_ERROR)
    ctx = _context(facts, count)
    preloaded = bool(ctx.master.get("preload", True)) and bool(ctx.master.get("forks", True))
    findings = _note_findings(ctx, preloaded)
    findings += [_connection_finding(conn, ctx) for conn in facts.get("connections") or []]
    findings += _pool_findings(facts, count)
    findings += _hook_findings(facts, ctx, preloaded)
    findings += _hazard_findings(facts, preloaded)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: order[f.severity])
    severities = {f.severity for f in findings}
    if "error" in severities:
        verdict, code = "unsafe", EXIT_FINDINGS
    elif "warning" in severities:
        verdict, code = "warnings", EXIT_FINDINGS
    else:
        verdict, code = "clean", EXIT_CLEAN
    return Diagnosis(facts, findings, count, source, verdict, code)
