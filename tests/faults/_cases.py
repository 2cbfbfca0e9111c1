"""What the fault cases on the two standard pairings start from: uWSGI against MariaDB
(PyMySQL) and gunicorn against PostgreSQL (psycopg2), so that every case covers both servers
and both databases; the session's private server for a backend, and a fresh database on it.

``test_faults.py``, ``test_reported_app.py`` and ``test_hard_crash.py`` run on these pairings;
``test_driver_matrix.py`` runs the other six and uses :func:`db_server` and
:func:`fresh_database` for them.
"""

from __future__ import annotations

import pytest

from forkguard_lab.harness.servers import DBServer

from ._harness import create_database

PAIRS = [("uwsgi", "mysql"), ("gunicorn", "postgresql")]
PAIR_IDS = ["uwsgi-mariadb", "gunicorn-postgres"]
DRIVER = {"mysql": "pymysql", "postgresql": "psycopg2"}
DB_LABEL = {"mysql": "MariaDB / PyMySQL", "postgresql": "PostgreSQL / psycopg2"}


def db_server(request: pytest.FixtureRequest, backend: str) -> DBServer:
    """The session's private server for ``backend`` (``mysql`` or ``postgresql``), started on
    first use by its fixture in ``conftest.py``."""
    srv: DBServer = request.getfixturevalue("mariadb" if backend == "mysql" else "postgres")
    return srv


def fresh_database(server: DBServer, driver: str) -> tuple[str, str]:
    """A new database on ``server`` for one case: (its name, its SQLAlchemy URL for
    ``driver``); a case's lost-write check reads only what its own load wrote."""
    dbname = create_database(server)
    return dbname, server.url(driver, dbname)
