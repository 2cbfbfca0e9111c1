"""``forkguard doctor`` end to end: real fixture apps, real MariaDB and PostgreSQL, real CLI."""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from .conftest import APPS, HELD, Run, doctor, mark, mysql_limits, pg_max_connections


@cache
def json_run(*args: str) -> Run:
    """One doctor run per distinct command line (several tests read the same report)."""
    return doctor(*args, "--json")


def kinds(doc: dict[str, Any], severity: str | None = None) -> list[str]:
    return [f["kind"] for f in doc["findings"] if severity is None or f["severity"] == severity]


def only(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [f for f in doc["findings"] if f["kind"] == kind]
    assert len(found) == 1, (kind, doc["findings"])
    return found[0]


# ---- the reported bug: a connection open after import ----------------------------------------


def test_flask_sqlalchemy_create_all_on_mariadb_is_reported_with_its_line() -> None:
    run = json_run("fsa_mysql:app")
    assert run.returncode == 1, run.stderr
    doc = run.doc
    assert doc["verdict"] == "unsafe"
    assert doc["exit_code"] == 1
    assert len(doc["connections"]) == 1
    conn = doc["connections"][0]
    assert conn["driver"] == "PyMySQL"
    assert conn["server"] == "127.0.0.1:3306"
    assert conn["url"] == "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4"
    assert conn["state"] == "idle in pool"
    assert conn["opened_at"] == mark("fsa_mysql.py", "create_all")
    finding = only(doc, "inherited-connection")
    assert finding["severity"] == "error"
    assert finding["location"] == mark("fsa_mysql.py", "create_all")
    assert "forkguard.install()" in finding["fix"]
    assert "db.engine.dispose()" in finding["fix"]
    assert doc["counts"]["error"] == 1


def test_human_report_names_the_line_and_the_verdict_without_colour_off_a_tty() -> None:
    run = doctor("fsa_mysql:app")
    assert run.returncode == 1
    expected = os.path.relpath(mark("fsa_mysql.py", "create_all"), APPS)
    assert f"at {expected}" in run.stdout
    assert "db.create_all()  # FG-MARK: create_all" in run.stdout  # the source line is shown
    assert "ERROR PyMySQL connection to 127.0.0.1:3306 is open after import" in run.stdout
    assert "verdict: UNSAFE" in run.stdout
    assert "\x1b[" not in run.stdout
    assert "Traceback" not in run.stdout
    coloured = doctor("fsa_mysql:app", "--color", "always")
    assert "\x1b[31;1mERROR" in coloured.stdout


def test_verbose_shows_the_full_opening_stack() -> None:
    run = doctor("fsa_mysql:app", "--verbose")
    assert run.returncode == 1
    assert "opened from:" in run.stdout
    assert "configure_db()" in run.stdout  # the caller of the create_all line
    assert "sqlalchemy" in run.stdout  # library frames are in the full stack


def test_flask_sqlalchemy_on_postgresql_with_psycopg2() -> None:
    doc = json_run("fsa_pg:app").doc
    assert doc["exit_code"] == 1
    [conn] = doc["connections"]
    assert conn["driver"] == "psycopg2"
    assert conn["server"] == "127.0.0.1:5432"
    assert conn["opened_at"] == mark("fsa_pg.py", "create_all")
    assert doc["servers"]["postgresql://127.0.0.1:5432"]["max_connections"] == pg_max_connections()


def test_flask_sqlalchemy_2_style_checked_out_connection_with_mysqlclient() -> None:
    doc = json_run("fsa2_style:app").doc
    assert doc["exit_code"] == 1
    [conn] = doc["connections"]
    assert conn["driver"] == "mysqlclient"
    assert conn["checked_out"] is True
    assert conn["opened_at"] == mark("fsa2_style.py", "session query")
    finding = only(doc, "inherited-connection")
    assert "db.session.remove()" in finding["fix"]
    assert "ROLLBACK" in finding["detail"]


def test_clean_app_exits_0_and_still_checks_both_servers() -> None:
    run = json_run("clean_app:app")
    assert run.returncode == 0, run.stdout
    doc = run.doc
    assert doc["verdict"] == "clean"
    assert doc["connections"] == []
    assert kinds(doc, "error") == [] and kinds(doc, "warning") == []
    max_mysql, wait = mysql_limits()
    mysql = doc["servers"]["mysql://127.0.0.1:3306"]
    assert (mysql["max_connections"], mysql["wait_timeout"]) == (max_mysql, wait)
    assert doc["servers"]["postgresql://127.0.0.1:5432"]["max_connections"] == pg_max_connections()
    # The doctor's own connections to ask for the limits are not reported.
    assert doc["sockets"] == []
    human = doctor("clean_app:app")
    assert human.returncode == 0
    assert "verdict: CLEAN" in human.stdout


# ---- asyncio engines: create_async_engine, a query in asyncio.run() at import -----------------

ASYNC_APPS = [
    pytest.param("async_pg", "asyncpg", "127.0.0.1:5432", id="asyncpg"),
    pytest.param("async_mysql", "aiomysql", "127.0.0.1:3306", id="aiomysql"),
]


@pytest.mark.parametrize(("app", "driver", "server"), ASYNC_APPS)
def test_asyncio_engine_connection_left_in_the_pool_is_unsafe(
    app: str, driver: str, server: str
) -> None:
    run = json_run(f"{app}:app")
    assert run.returncode == 1, run.stderr
    doc = run.doc
    assert doc["verdict"] == "unsafe"
    [conn] = doc["connections"]
    assert (conn["driver"], conn["server"], conn["asyncio"]) == (driver, server, True)
    assert (conn["pooled"], conn["checked_out"], conn["state"]) == (True, False, "idle in pool")
    assert conn["opened_at"] == mark(f"{app}.py", "connect")
    finding = only(doc, "inherited-connection")
    assert finding["severity"] == "error"
    assert finding["location"] == mark(f"{app}.py", "connect")
    assert "forkguard.install()" in finding["fix"]
    assert "`await engine.dispose()` inside the same asyncio.run()" in finding["fix"]
    # The limits are asked through the asyncio engine too (in a greenlet, on a new loop).
    [limits] = doc["servers"].values()
    assert limits["max_connections"] > 0, limits
    assert doc["sockets"] == [] and doc["event_loops"] == []


@pytest.mark.parametrize(("app", "driver", "server"), ASYNC_APPS)
def test_asyncio_engine_disposed_at_the_end_of_import_is_clean(
    app: str, driver: str, server: str
) -> None:
    run = json_run(f"{app}_disposed:app")
    assert run.returncode == 0, run.stdout
    doc = run.doc
    assert doc["verdict"] == "clean"
    assert doc["connections"] == []
    assert kinds(doc, "error") == [] and kinds(doc, "warning") == []


@pytest.mark.parametrize(
    ("app", "placement"),
    [("async_pg", "top"), ("async_mysql", "end")],
    ids=["asyncpg-install-first", "aiomysql-install-after-the-query"],
)
def test_asyncio_engine_with_forkguard_installed_is_clean(
    tmp_path: Path, app: str, placement: str
) -> None:
    # The doctor's fix, placed before the engine exists or after its import-time query.
    install = "import forkguard\nforkguard.install()\n"
    source = (APPS / f"{app}.py").read_text()
    (tmp_path / "guarded.py").write_text(
        install + source if placement == "top" else source + install
    )
    run = doctor("guarded:app", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stdout
    [conn] = run.doc["connections"]
    assert conn["protected_by_forkguard"] is True
    assert only(run.doc, "guarded-connection")["severity"] == "info"


# ---- a connection still checked out: the line that holds it ------------------------------------


def test_checked_out_connection_is_reported_at_the_line_holding_it(tmp_path: Path) -> None:
    path = tmp_path / "held.py"
    path.write_text(HELD)
    run = doctor("held", "--json", cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    [conn] = run.doc["connections"]
    assert conn["checked_out"] is True
    assert conn["opened_at"] == f"{path}:3"
    assert conn["checked_out_at"] == f"{path}:5"
    finding = only(run.doc, "inherited-connection")
    assert finding["location"] == f"{path}:5"
    assert f"Checked out at {path}:5" in finding["detail"]
    assert f"First opened at {path}:3." in finding["detail"]
    assert "close its holder before the fork" in finding["fix"]
    human = doctor("held", "--verbose", cwd=tmp_path)
    assert "      at held.py:5\n         held = engine.connect()\n" in human.stdout
    assert "held from:" in human.stdout


def test_checked_out_twin_closed_and_disposed_at_the_end_of_import(tmp_path: Path) -> None:
    (tmp_path / "held.py").write_text(HELD + "held.close()\nengine.dispose()\n")
    doc = doctor("held", "--json", cwd=tmp_path).doc
    assert doc["connections"] == []
    assert "inherited-connection" not in kinds(doc)


def test_asyncio_connection_still_checked_out_names_the_awaiting_line(tmp_path: Path) -> None:
    # The pool checkout runs in SQLAlchemy's greenlet: the doctor follows it to the coroutine.
    (tmp_path / "aheld.py").write_text(
        "import asyncio\n"
        "from sqlalchemy.ext.asyncio import create_async_engine\n"
        'engine = create_async_engine("postgresql+asyncpg://root@127.0.0.1:5432/test")\n'
        "async def take():\n"
        "    return await engine.connect()\n"
        "held = asyncio.run(take())\n"
    )
    doc = doctor("aheld", "--json", cwd=tmp_path).doc
    [conn] = doc["connections"]
    assert (conn["driver"], conn["checked_out"]) == ("asyncpg", True)
    assert conn["checked_out_at"] == f"{tmp_path / 'aheld.py'}:5"
    finding = only(doc, "inherited-connection")
    assert finding["location"] == f"{tmp_path / 'aheld.py'}:5"
    assert "`await conn.close()`" in finding["fix"]


# ---- pool settings against the server ---------------------------------------------------------


def test_pool_bigger_than_max_connections_and_no_recycle() -> None:
    doc = json_run("big_pool", "--workers", "4").doc
    assert doc["exit_code"] == 1
    assert doc["workers"] == 4 and doc["workers_source"] == "--workers"
    max_connections, wait = mysql_limits()
    capacity = only(doc, "pool-capacity")
    assert capacity["data"]["per_worker"] == 50
    assert capacity["data"]["total"] == 200
    assert capacity["severity"] == ("error" if max_connections < 200 else "warning")
    assert capacity["location"] == mark("big_pool.py", "engine")
    recycle = only(doc, "pool-recycle")
    assert recycle["severity"] == "warning"
    assert recycle["data"]["wait_timeout"] == wait
    assert "pool_recycle=" in recycle["fix"] and "pool_pre_ping=True" in recycle["fix"]
    assert recycle["location"] == mark("big_pool.py", "engine")


def test_pool_that_fits_gives_no_capacity_finding() -> None:
    doc = json_run("big_pool", "--workers", "1").doc
    assert "pool-capacity" not in kinds(doc)
    assert "pool-recycle" in kinds(doc)  # still a warning: exit code 1
    assert doc["exit_code"] == 1


# ---- server configs: gunicorn and uWSGI -------------------------------------------------------


def test_gunicorn_config_with_preload_and_4_workers() -> None:
    doc = json_run("-c", "gunicorn_preload.conf.py").doc
    assert doc["exit_code"] == 1
    assert doc["master"]["server"] == "gunicorn"
    assert doc["master"]["preload"] is True
    assert doc["master"]["app"] == "fsa_mysql:app"
    assert (doc["workers"], doc["workers_source"]) == (4, "gunicorn config")
    finding = only(doc, "inherited-connection")
    assert finding["title"].endswith("all 4 workers inherit it")
    assert finding["location"] == mark("fsa_mysql.py", "create_all")
    assert "at the top of gunicorn_preload.conf.py" in finding["fix"]


def test_gunicorn_config_without_preload_is_safe_but_says_so() -> None:
    run = json_run("-c", "gunicorn_lazy.conf.py")
    assert run.returncode == 0
    doc = run.doc
    assert doc["verdict"] == "clean"
    assert doc["master"]["preload"] is False
    assert "not-preloaded" in kinds(doc, "info")
    assert only(doc, "per-worker-connection")["location"] == mark("fsa_mysql.py", "create_all")
    human = doctor("-c", "gunicorn_lazy.conf.py")
    assert "preload_app is off" in human.stdout
    assert "SAFE, but not preloaded" in human.stdout


def test_workers_flag_overrides_the_config() -> None:
    doc = json_run("-c", "gunicorn_preload.conf.py", "--workers", "9").doc
    assert (doc["workers"], doc["workers_source"]) == (9, "--workers")


def test_uwsgi_ini_without_lazy_apps() -> None:
    doc = json_run("--uwsgi", "uwsgi_preload.ini").doc
    assert doc["exit_code"] == 1
    assert doc["master"]["server"] == "uwsgi"
    assert (doc["workers"], doc["master"]["preload"]) == (4, True)
    assert only(doc, "inherited-connection")["location"] == mark("fsa_mysql.py", "create_all")


def test_uwsgi_ini_with_lazy_apps_is_safe_but_not_preloaded() -> None:
    run = json_run("--uwsgi", "uwsgi_lazy.ini")
    assert run.returncode == 0
    doc = run.doc
    assert doc["master"]["preload"] is False
    assert "not-preloaded" in kinds(doc)
    assert "inherited-connection" not in kinds(doc)
    assert "SAFE, but not preloaded" in doctor("--uwsgi", "uwsgi_lazy.ini").stdout


def test_the_reported_uwsgi_app_and_its_postfork_dispose() -> None:
    # The reported app imports uwsgidecorators: it loads under the doctor's stand-in uwsgi module.
    doc = json_run("--uwsgi", "uwsgi_postfork_dispose.ini").doc
    assert doc["exit_code"] == 1
    where = mark("uwsgi_postfork_dispose.py", "create_all")
    assert only(doc, "inherited-connection")["location"] == where
    hook = only(doc, "postfork-dispose")
    assert hook["severity"] == "warning"
    assert "reset_db_connections" in hook["title"]
    # The fix is forkguard in the master, or a dispose() in the master: never one in the hook.
    assert "forkguard.install()" in hook["fix"]
    assert "remove this dispose() from the hook" in hook["fix"]
    assert "close=False" not in hook["fix"]


# ---- other fork hazards ------------------------------------------------------------------------


def test_thread_socket_event_loop_and_raw_psycopg3_connection() -> None:
    doc = json_run("hazards.py").doc
    assert doc["exit_code"] == 1
    [conn] = doc["connections"]
    assert conn["driver"] == "psycopg 3"
    assert conn["pooled"] is False
    assert conn["opened_at"] == mark("hazards.py", "raw connect")
    assert "forkguard.track(conn)" in only(doc, "inherited-connection")["fix"]
    thread = only(doc, "thread-at-import")
    assert thread["location"] == mark("hazards.py", "thread")
    assert thread["data"]["name"] == "heartbeat"
    sock = only(doc, "socket-at-import")  # exactly one: the loop's self-pipe is not listed
    assert sock["location"] == mark("hazards.py", "socket")
    assert sock["data"]["peer"] == "127.0.0.1:5432"
    assert only(doc, "event-loop")["severity"] == "warning"
    assert doc["counts"] == {"error": 1, "warning": 3, "info": 0}


# ---- Django ------------------------------------------------------------------------------------

needs_django = pytest.mark.skipif(
    importlib.util.find_spec("django") is None, reason="Django is not installed (extra: django)"
)


@needs_django
@pytest.mark.parametrize("target", ["djsite.wsgi:application", "djsite.settings"])
def test_django_query_in_appconfig_ready(target: str) -> None:
    doc = json_run(target).doc
    assert doc["exit_code"] == 1
    [conn] = doc["connections"]
    assert conn["django_alias"] == "default"
    assert conn["driver"] == "psycopg 3"
    assert conn["opened_at"] == mark("djsite/apps.py", "django query")
    assert "connections.close_all()" in only(doc, "inherited-connection")["fix"]


@needs_django
def test_django_with_forkguard_django_in_installed_apps_is_clean() -> None:
    # The doctor's Django fix (INSTALLED_APPS += ["forkguard.django"]), after the querying app.
    run = json_run("djsite.settings_guarded")
    assert run.returncode == 0, run.stdout
    guarded = only(run.doc, "guarded-connection")
    assert guarded["location"] == mark("djsite/apps.py", "django query")
    assert (
        'INSTALLED_APPS += ["forkguard.django"]'
        in only(json_run("djsite.settings").doc, "inherited-connection")["fix"]
    )


# ---- JSON ---------------------------------------------------------------------------------------


def test_json_schema() -> None:
    doc = json_run("fsa_mysql:app").doc
    assert set(doc) >= {
        "schema",
        "target",
        "verdict",
        "exit_code",
        "workers",
        "workers_source",
        "master",
        "import_error",
        "counts",
        "findings",
        "connections",
        "engines",
        "servers",
        "threads",
        "sockets",
        "event_loops",
    }
    assert doc["schema"] == 1
    for finding in doc["findings"]:
        assert set(finding) == {"kind", "severity", "title", "detail", "fix", "location", "data"}
        assert finding["severity"] in ("error", "warning", "info")
    [engine] = doc["engines"]
    assert engine["pool"] == "QueuePool"
    assert (engine["pool_size"], engine["max_overflow"], engine["pool_recycle"]) == (5, 10, 7200)
    assert "stack" not in doc["connections"][0]  # stacks only with --verbose
    verbose = doctor("fsa_mysql:app", "--json", "--verbose").doc
    assert any("fsa_mysql.py" in line for line in verbose["connections"][0]["stack"])


# ---- import errors and bad command lines --------------------------------------------------------


def test_import_error_in_user_code_exits_2_with_type_message_and_line() -> None:
    run = doctor("broken_app:app")
    assert run.returncode == 2
    where = os.path.relpath(mark("broken_app.py", "broken"), APPS)
    assert "KeyError: 'database_url'" in run.stderr
    assert f"at {where}" in run.stderr
    assert "Traceback" not in run.stderr
    verbose = doctor("broken_app:app", "--verbose")
    assert verbose.returncode == 2
    assert "Traceback (most recent call last)" in verbose.stderr
    as_json = doctor("broken_app:app", "--json")
    assert as_json.returncode == 2
    error = as_json.doc["import_error"]
    assert error["type"] == "KeyError"
    assert error["location"] == mark("broken_app.py", "broken")
    assert as_json.doc["verdict"] == "import-error"


def test_missing_module_and_missing_attribute() -> None:
    run = doctor("no_such_module:app")
    assert run.returncode == 2
    assert "ModuleNotFoundError: No module named 'no_such_module'" in run.stderr
    assert "--chdir" in run.stderr
    missing = doctor("clean_app:nope")
    assert missing.returncode == 2
    assert "module 'clean_app' has no attribute 'nope'" in missing.stderr


def test_import_that_never_finishes_times_out() -> None:
    run = doctor("slow_app", "--timeout", "2")
    assert run.returncode == 2
    assert "did not finish within 2 s" in run.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "no target"),
        (("--frobnicate", "x:app"), "unrecognized arguments: --frobnicate"),
        (("fsa_mysql:app", "--workers", "0"), "'0' must be at least 1"),
        (("fsa_mysql:app", "--workers", "four"), "'four' is not a whole number"),
        (("missing_file.py",), "file 'missing_file.py' not found"),
        (("-c", "nope.conf.py"), "gunicorn config 'nope.conf.py' not found"),
        (("--uwsgi", "nope.ini"), "uWSGI ini 'nope.ini' not found"),
        (("-c", "gunicorn_preload.conf.py", "--uwsgi", "uwsgi_lazy.ini"), "not both"),
        (("--uwsgi", "uwsgi_lazy.ini", "fsa_mysql:app"), "drop 'fsa_mysql:app'"),
        (("fsa_mysql:",), "nothing after ':'"),
        (("not a module",), "is not a module name"),
        (("x:app", "--color", "pink"), "invalid choice: 'pink'"),
    ],
)
def test_bad_command_lines_give_one_clear_line(args: tuple[str, ...], message: str) -> None:
    run = doctor(*args)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("forkguard doctor: error: ")
    assert message in lines[0]
    assert run.stdout == ""


def test_help_exits_0() -> None:
    run = doctor("--help")
    assert run.returncode == 0
    assert "--uwsgi INI" in run.stdout
    assert "exit codes: 0 clean, 1 findings, 2" in run.stdout


def test_install_in_a_post_fork_hook_protects_but_is_later_than_needed() -> None:
    run = json_run("-c", "gunicorn_postfork_install.conf.py")
    assert run.returncode == 0, run.stdout
    doc = run.doc
    assert doc["verdict"] == "clean"
    guarded = only(doc, "guarded-connection")
    assert guarded["location"] == mark("fsa_mysql.py", "create_all")
    assert "forkguard.install() in the post-fork hook post_fork" in guarded["detail"]
    late = only(doc, "postfork-install")
    assert late["severity"] == "info"
    assert late["location"] == mark("gunicorn_postfork_install.conf.py", "post_fork")
    assert "That works" in late["detail"] and "later than needed" in late["detail"]
    assert "at the top of gunicorn_postfork_install.conf.py" in late["fix"]
    # Its twin without the hook (gunicorn_preload.conf.py) is an error: see above.


def test_app_that_installs_forkguard_is_clean() -> None:
    run = json_run("fsa_guarded:app", "--workers", "4")
    assert run.returncode == 0, run.stdout
    doc = run.doc
    assert doc["verdict"] == "clean"
    [conn] = doc["connections"]
    assert conn["protected_by_forkguard"] is True
    assert only(doc, "guarded-connection")["location"] == mark("fsa_guarded.py", "create_all")
    human = doctor("fsa_guarded:app")
    assert "CLEAN: forkguard guards what the workers inherit" in human.stdout
