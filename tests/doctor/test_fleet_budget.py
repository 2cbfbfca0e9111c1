"""``forkguard doctor --hosts N --workers W``: the fleet's connections against the real shared
servers' limits (read here too), and against a real PgBouncer or forwarder in front of them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ._proxies import PgBouncer, private_pgbouncer, tcp_forwarder
from .conftest import MYSQL, PG, Run, doctor

# Each worker's pool: pool_size=2 + max_overflow=1 = 3 connections; nothing open at import.
PER_WORKER = 3
WORKERS = 4
APP = (
    "from sqlalchemy import create_engine\n"
    'engine = create_engine("{url}", pool_size=2, max_overflow=1, pool_pre_ping=True)\n'
)
URLS = {
    "mysql": "mysql+pymysql://root@127.0.0.1:{port}/test",
    "postgresql": "postgresql+psycopg2://root@127.0.0.1:{port}/test",
}
PORTS = {"mysql": 3306, "postgresql": 5432}


def usable(family: str) -> tuple[int, int]:
    """(max_connections, the connections an app may use) as the server itself says."""
    if family == "mysql":
        import pymysql

        conn = pymysql.connect(**MYSQL)
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL VARIABLES LIKE 'max_connections'")
            row = cur.fetchone()
        conn.close()
        assert row is not None
        return int(row[1]), int(row[1])  # the SUPER reserve is on top of max_connections
    import psycopg2

    pg = psycopg2.connect(PG)
    with pg.cursor() as cur:
        cur.execute(
            "SELECT name, setting::int FROM pg_settings WHERE name IN ('max_connections', "
            "'superuser_reserved_connections', 'reserved_connections')"
        )
        settings = dict(cur.fetchall())
    pg.close()
    total = settings["max_connections"]
    return total, total - settings["superuser_reserved_connections"] - settings.get(
        "reserved_connections", 0
    )


def run_app(tmp_path: Path, family: str, port: int, *args: str) -> Run:
    (tmp_path / "fleet_app.py").write_text(APP.format(url=URLS[family].format(port=port)))
    return doctor("fleet_app", "--workers", str(WORKERS), *args, cwd=tmp_path)


def capacity(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in doc["findings"] if f["kind"] == "pool-capacity"]


FAMILIES = [pytest.param("mysql", id="mariadb"), pytest.param("postgresql", id="postgresql")]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_fleet_that_fits_the_servers_limits(tmp_path: Path, family: str) -> None:
    max_connections, room = usable(family)
    hosts = int(room * 0.8) // (WORKERS * PER_WORKER)  # the most hosts within the headroom
    assert hosts >= 2, f"the shared server allows too few connections: {room}"
    run = run_app(tmp_path, family, PORTS[family], "--hosts", str(hosts), "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    [entry] = run.doc["budget"]
    assert run.doc["hosts"] == hosts
    assert entry["total"] == hosts * WORKERS * PER_WORKER
    assert (entry["max_connections"], entry["usable"], entry["fits"]) == (
        max_connections,
        room,
        True,
    )
    assert capacity(run.doc) == []
    human = run_app(tmp_path, family, PORTS[family], "--hosts", str(hosts))
    assert f"{hosts} hosts x {WORKERS} workers x {PER_WORKER} = " in human.stdout
    assert f"of {room} usable: fits" in human.stdout


@pytest.mark.parametrize("family", FAMILIES)
def test_a_fleet_over_the_servers_limits_gets_numbers_that_fit(tmp_path: Path, family: str) -> None:
    max_connections, room = usable(family)
    hosts = room // (WORKERS * PER_WORKER) + 1  # one host too many
    run = run_app(tmp_path, family, PORTS[family], "--hosts", str(hosts), "--json")
    assert run.returncode == 1, run.stdout + run.stderr
    [finding] = capacity(run.doc)
    assert finding["severity"] == "error"
    data = finding["data"]
    total = hosts * WORKERS * PER_WORKER
    assert (data["total"], data["usable"], data["hosts"], data["fits"]) == (
        total,
        room,
        hosts,
        False,
    )
    assert (
        f"{hosts} hosts x {WORKERS} workers x {PER_WORKER} = {total} > {room} usable"
        in (finding["title"])
    )
    advice = data["recommendation"]
    pooler = advice["pooler"]
    # The numbers it recommends fit: the pools, or one pooler per host sharing the server.
    if advice["pool_size"] is not None:
        assert hosts * WORKERS * (advice["pool_size"] + advice["max_overflow"]) <= room
    assert advice["max_connections"] - (max_connections - room) >= total
    if family == "postgresql":
        assert pooler["product"] == "PgBouncer" and pooler["pool_mode"] == "transaction"
        assert hosts * pooler["default_pool_size"] <= room
        assert pooler["max_client_conn"] == WORKERS * PER_WORKER
        expected = (
            f"PgBouncer (pool_mode = transaction) on each host: max_client_conn = "
            f"{WORKERS * PER_WORKER} (one host's clients), default_pool_size = "
            f"{pooler['default_pool_size']}"
        )
    else:
        assert hosts * pooler["mysql_servers.max_connections"] <= room
        expected = f"ProxySQL on each host: mysql-max_connections = {WORKERS * PER_WORKER}"
    assert expected in finding["fix"]
    human = run_app(tmp_path, family, PORTS[family], "--hosts", str(hosts))
    assert human.returncode == 1
    assert f"= {total} of {room} usable: DOES NOT FIT" in human.stdout
    assert expected in " ".join(human.stdout.split())  # the report wraps the fix


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "'0' must be at least 1"),
        ("-2", "'-2' must be at least 1"),
        ("two", "'two' is not a whole number"),
        ("1.5", "'1.5' is not a whole number"),
    ],
)
def test_bad_host_counts_give_one_clear_line(value: str, message: str) -> None:
    run = doctor("clean_app:app", "--hosts", value)
    assert run.returncode == 2
    [line] = run.stderr.strip().splitlines()
    assert line.startswith("forkguard doctor: error: argument --hosts: ")
    assert message in line
    assert run.stdout == ""


# ---- through something in front of the server ---------------------------------------------------


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[PgBouncer]:
    with private_pgbouncer(
        5432, max_client_conn=50, default_pool_size=7, reserve_pool_size=2
    ) as pgb:
        yield pgb


def test_pgbouncer_is_recognised_and_its_limits_checked(
    tmp_path: Path, pgbouncer: PgBouncer
) -> None:
    run = run_app(tmp_path, "postgresql", pgbouncer.port, "--hosts", "3", "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    [server] = run.doc["servers"].values()
    pooler = server["pooler"]
    assert (pooler["product"], pooler["pool_mode"]) == ("PgBouncer", "transaction")
    assert (pooler["max_client_conn"], pooler["default_pool_size"]) == (50, 7)
    assert server["port"] == 5432  # the server behind it
    [entry] = run.doc["budget"]
    per_pooler = 7 + 2
    # On 127.0.0.1: one PgBouncer per host, each with one host's clients.
    assert (entry["pooler_instances"], entry["pooler_clients"]) == (3, WORKERS * PER_WORKER)
    assert entry["pooler_server_connections"] == 3 * per_pooler
    assert entry["fits"] is True
    [finding] = capacity(run.doc)
    assert finding["severity"] == "info"
    assert "is PgBouncer 1." in finding["title"]


def test_pgbouncer_over_its_client_limit_and_the_servers(
    tmp_path: Path, pgbouncer: PgBouncer
) -> None:
    _, room = usable("postgresql")
    hosts = room // (7 + 2) + 1  # the poolers' server connections no longer fit
    workers = 50 // PER_WORKER + 1  # one host's clients no longer fit max_client_conn=50
    (tmp_path / "fleet_app.py").write_text(
        APP.format(url=URLS["postgresql"].format(port=pgbouncer.port))
    )
    run = doctor(
        "fleet_app", "--workers", str(workers), "--hosts", str(hosts), "--json", cwd=tmp_path
    )
    assert run.returncode == 1, run.stdout + run.stderr
    [finding] = capacity(run.doc)
    assert finding["severity"] == "error"
    assert f"raise max_client_conn to at least {workers * PER_WORKER}" in finding["fix"].lower()
    assert "default_pool_size + reserve_pool_size" in finding["fix"]
    assert finding["data"]["pooler_server_connections"] == hosts * 9 > room


@pytest.mark.parametrize("family", FAMILIES)
def test_a_forwarder_in_front_is_named_and_its_limits_unknown(tmp_path: Path, family: str) -> None:
    _, room = usable(family)
    hosts = room // (WORKERS * PER_WORKER) + 1
    with tcp_forwarder(PORTS[family]) as port:
        run = run_app(tmp_path, family, port, "--hosts", str(hosts), "--json")
    assert run.returncode == 1, run.stdout + run.stderr
    [note] = [f for f in run.doc["findings"] if f["kind"] == "pooler"]
    assert note["severity"] == "info"
    assert f"on port {PORTS[family]}" in note["title"]
    assert "its limits could not be read" in note["title"]
    # Still checked against the server, as if every client were a server connection.
    [finding] = capacity(run.doc)
    assert finding["severity"] == "error"
    assert "through a pooler whose limits are unknown" in finding["title"]


@pytest.mark.parametrize("family", FAMILIES)
def test_straight_to_the_server_no_pooler_is_reported(tmp_path: Path, family: str) -> None:
    # The twin of the forwarder test: the same app on the server's own port.
    run = run_app(tmp_path, family, PORTS[family], "--json")
    [server] = run.doc["servers"].values()
    assert "pooler" not in server
    assert [f for f in run.doc["findings"] if f["kind"] == "pooler"] == []
