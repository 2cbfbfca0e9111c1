"""install() / protect() / uninstall(): what each covers, and what they refuse."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest
import sqlalchemy as sa

import forkguard

from .conftest import URLS, session_id_sql
from .forking import run_in_child


def _child_disposes(engine: sa.engine.Engine) -> None:
    def child() -> None:
        engine.dispose()
        gc.collect()

    assert run_in_child(child)["ok"]


def _parent_alive(engine: sa.engine.Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError:
        return False
    return True


def test_install_covers_engines_and_connections_made_before_it(make_engine):
    engine = make_engine(URLS["pymysql"])
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    forkguard.install()
    _child_disposes(engine)
    assert _parent_alive(engine)


def test_install_covers_engines_made_after_it(make_engine):
    forkguard.install()
    engine = make_engine(URLS["mysqlclient"])
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    _child_disposes(engine)
    assert _parent_alive(engine)


def test_install_twice_is_harmless(make_engine):
    forkguard.install()
    forkguard.install()
    engine = make_engine(URLS["pymysql"])
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))

    def child() -> dict[str, int]:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return forkguard.stats()

    stats = run_in_child(child)["value"]
    assert stats["forks_seen"] == 1
    assert stats["connections_neutralized"] == 1
    from forkguard import _integration
    from forkguard import sqlalchemy as fg_sa

    assert len(fg_sa._listeners) == len(set(fg_sa._listeners))
    names = [i.name for i in _integration.installed()]  # and the client libraries imported
    assert names[0] == "sqlalchemy" and len(names) == len(set(names))


def test_uninstall_removes_every_hook(make_engine):
    forkguard.install()
    forkguard.uninstall()
    engine = make_engine(URLS["pymysql"])
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    _child_disposes(engine)
    assert not _parent_alive(engine)


@pytest.mark.parametrize("how", ["install", "protect"])
def test_nothing_runs_on_checkin_and_one_listener_on_checkout(make_engine, how):
    """The hot path budget: SQLAlchemy builds a PoolResetState per checkin for any ``reset``
    listener, and leaves its checkout fast path for any ``checkout`` listener; forkguard pays
    the second (its fork check) and never the first (docs/benchmarks.md)."""
    engine = make_engine(URLS["pymysql"])
    if how == "install":
        forkguard.install()
    else:
        forkguard.protect(engine)
    dispatch = engine.pool.dispatch
    assert not dispatch.reset and not dispatch.checkin
    assert len(list(dispatch.checkout)) == 1
    # A checkout in the parent runs it and touches nothing.
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    assert forkguard.stats()["forks_seen"] == 0


def test_protect_guards_only_that_engine(make_engine):
    guarded = forkguard.protect(make_engine(URLS["pymysql"]))
    other = make_engine(URLS["pymysql"])
    for engine in (guarded, other):
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def child() -> None:
        guarded.dispose()
        other.dispose()

    assert run_in_child(child)["ok"]
    assert _parent_alive(guarded)
    assert not _parent_alive(other)


def test_protect_an_engine_that_already_has_connections(make_engine):
    url = URLS["psycopg2"]
    engine = make_engine(url)
    with engine.connect() as conn:
        before = conn.execute(sa.text(session_id_sql(url))).scalar()
    forkguard.protect(engine)
    _child_disposes(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text(session_id_sql(url))).scalar() == before


def test_protect_survives_the_pool_being_recreated(make_engine):
    engine = forkguard.protect(make_engine(URLS["pymysql"]))
    engine.dispose()  # a new pool: the listeners must come along
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    _child_disposes(engine)
    assert _parent_alive(engine)


@pytest.mark.parametrize(
    "not_an_engine", [None, "mysql://x", object(), sa.pool.NullPool(lambda: None)]
)
def test_protect_refuses_what_is_not_an_engine(not_an_engine):
    with pytest.raises(TypeError, match="takes a SQLAlchemy Engine or AsyncEngine"):
        forkguard.protect(not_an_engine)


def test_stats_in_the_parent_are_unchanged_by_children(make_engine):
    forkguard.install()
    engine = make_engine(URLS["pymysql"])
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    before = forkguard.stats()
    _child_disposes(engine)
    assert forkguard.stats() == before
    assert before["forks_seen"] == 0
    assert before["connections_opened"] >= 1


def test_install_next_to_lazy_proxies_that_raise():
    """install() scans the heap once; Django's unconfigured settings and an unbound werkzeug
    LocalProxy raise when asked for their __class__, and must not break it."""
    pytest.importorskip("django")
    pytest.importorskip("werkzeug")
    code = (
        "import django.conf\n"
        "from werkzeug.local import LocalProxy\n"
        "unbound = LocalProxy(lambda: 1 / 0)\n"
        "settings = django.conf.settings\n"
        "import forkguard\n"
        "forkguard.install()\n"
        "print('installed')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "installed"


def test_after_fork_steps_run_in_one_fixed_order_whatever_the_install_order():
    pytest.importorskip("django")
    from forkguard import _integration

    code = (
        "import django; from django.conf import settings; settings.configure(); django.setup()\n"
        "import forkguard.django, forkguard\n"
        "from forkguard import _integration\n"
        "forkguard.django._INTEGRATION.install()\n"  # Django's first
        "forkguard.install()\n"
        "print([i.name for i in _integration.installed()])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "['sqlalchemy', 'django']", proc.stderr
    # Database integrations first, then the network clients.
    assert [name for name, _, _ in _integration.KNOWN] == [
        "sqlalchemy",
        "django",
        "urllib3",
        "httpx",
        "pika",
        "amqp",
    ]


def test_install_again_restores_listeners_someone_cleared(make_engine):
    # SQLAlchemy's own test suite clears class-level pool listeners between some tests.
    from forkguard import sqlalchemy as fg_sa

    forkguard.install()
    sa.pool.Pool.dispatch._clear()
    assert not sa.event.contains(sa.pool.Pool, "checkout", fg_sa._on_checkout)
    forkguard.install()
    assert sa.event.contains(sa.pool.Pool, "checkout", fg_sa._on_checkout)
    assert len(fg_sa._listeners) == len(set(fg_sa._listeners))
