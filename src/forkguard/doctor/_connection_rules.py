"""The rules for each database connection open after import: inherited (and how to fix it),
guarded by forkguard, or opened per worker and so not inherited at all."""

from __future__ import annotations

from typing import Any, Callable

from ._rules import Context, Finding, Rule, always, install, sentence, who

_HOLDERS = "a Connection, a Session, an app context never popped"

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


def _finding(
    conn: dict[str, Any], kind: str, severity: str, title: str, *, detail: str, fix: str
) -> Finding:
    """A finding about ``conn``, at the line that holds it (or opened it)."""
    held = conn.get("checked_out_at")
    server = conn.get("server") or "an unknown server"
    return Finding(
        kind=kind,
        severity=severity,
        title=f"{conn['driver']} connection to {server} {title}",
        detail=detail,
        fix=fix,
        location=held or conn.get("opened_at"),
        stack=(conn.get("checkout_stack") if held else conn.get("stack")) or [],
        data={k: conn.get(k) for k in _CONN_DATA},
    )


# ---- not inherited: the master does not fork, or does not import the app -------------------


def _not_inherited(conn: dict[str, Any], ctx: Context) -> bool:
    forks = ctx.master.get("forks", True)
    return not (forks and (ctx.master.get("preload", True) or conn.get("phase") == "config"))


def _per_worker_finding(conn: dict[str, Any], ctx: Context) -> Finding:
    why = (
        "uWSGI never forks with this configuration"
        if not ctx.master.get("forks", True)
        else "the master does not import the app (preload off / lazy-apps): each worker "
        "opens its own after the fork"
    )
    return _finding(
        conn,
        "per-worker-connection",
        "info",
        "opened at import, not inherited",
        detail=f"{_where(conn)} Safe here because {why}.",
        fix=(
            "Nothing to fix. To get preloading's memory savings and faster worker starts, "
            f"turn preloading on and {install(ctx)}."
        ),
    )


# ---- guarded by forkguard ---------------------------------------------------------------------


def _guard(conn: dict[str, Any], ctx: Context) -> str | None:
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


def _guarded_finding(conn: dict[str, Any], ctx: Context) -> Finding:
    return _finding(
        conn,
        "guarded-connection",
        "info",
        "is open after import, guarded by forkguard",
        detail=f"{_where(conn)} {_guard(conn, ctx)}",
        fix="Nothing to fix.",
    )


# ---- inherited: the bug -----------------------------------------------------------------------


def _inherited_finding(conn: dict[str, Any], ctx: Context) -> Finding:
    return _finding(
        conn,
        "inherited-connection",
        "error",
        f"is open after import: {who(ctx.workers)}",
        detail=_inherited_detail(conn),
        fix=_fix_for(conn, ctx),
    )


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


# The first rule that matches gives the finding for each connection.
CONNECTION_RULES: tuple[Rule[dict[str, Any]], ...] = (
    Rule(_not_inherited, _per_worker_finding),
    Rule(lambda conn, ctx: _guard(conn, ctx) is not None, _guarded_finding),
    Rule(always, _inherited_finding),
)


# ---- the fix for an inherited connection ------------------------------------------------------


def _dispose(conn: dict[str, Any]) -> str:
    if conn.get("asyncio"):
        return "`await engine.dispose()` inside the same asyncio.run()"
    return "`engine.dispose()` (Flask-SQLAlchemy: `db.engine.dispose()`)"


def _django_fix(conn: dict[str, Any], ctx: Context) -> str:
    return (
        f"{sentence(install(ctx))}: each worker then drops the inherited connection without "
        f"sending a byte and opens its own. Without forkguard: Django opened it (alias "
        f"{conn['django_alias']!r}) while the app was imported; move that query out of import "
        "(AppConfig.ready(), module level, urls.py), or call "
        "`from django.db import connections; connections.close_all()` at the end of wsgi.py."
    )


def _sqlite_fix(conn: dict[str, Any], ctx: Context) -> str:
    return (
        "A SQLite connection must never cross fork() (SQLite's 'How To Corrupt', 2.6): "
        "open it in each worker, after the fork (or per request), and close the import-time "
        "one before the server forks."
    )


def _with_forkguard(ctx: Context) -> str:
    return (
        f"{sentence(install(ctx))}: each worker then drops its inherited copy without "
        "sending a byte and opens its own connection."
    )


def _checked_out_fix(conn: dict[str, Any], ctx: Context) -> str:
    close = "`await conn.close()`" if conn.get("asyncio") else "`conn.close()`"
    return (
        f"{_with_forkguard(ctx)} Without forkguard: close its holder before the fork ({close}; "
        f"a Session: `db.session.remove()` / pop the app context), then call {_dispose(conn)}, "
        "in the master."
    )


def _pooled_fix(conn: dict[str, Any], ctx: Context) -> str:
    where = conn.get("opened_at") or "import"
    return (
        f"{_with_forkguard(ctx)} Without forkguard: call {_dispose(conn)} right after the "
        f"import-time work, in the master; or move that work (the call at {where}: "
        "create_all(), a query) out of import, e.g. into a CLI command or a migration."
    )


def _raw_fix(conn: dict[str, Any], ctx: Context) -> str:
    return (
        f"Open this {conn['driver']} connection in each worker (gunicorn `post_fork` hook, "
        "`uwsgidecorators.postfork`) or per request, or close it before the server forks. "
        "To keep it, wrap it: `forkguard.track(conn)` makes the workers' copies harmless."
    )


# The first rule that matches gives the fix for an unguarded inherited connection.
_FIX_RULES: tuple[
    tuple[Callable[[dict[str, Any]], bool], Callable[[dict[str, Any], Context], str]], ...
] = (
    (lambda c: bool(c.get("django_alias")), _django_fix),
    (lambda c: c["driver"] == "sqlite3", _sqlite_fix),
    (lambda c: bool(c.get("checked_out")), _checked_out_fix),
    (lambda c: bool(c.get("pooled")), _pooled_fix),
    (lambda c: True, _raw_fix),
)


def _fix_for(conn: dict[str, Any], ctx: Context) -> str:
    return next(fix(conn, ctx) for matches, fix in _FIX_RULES if matches(conn))
