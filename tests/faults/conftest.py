"""Fixtures for the fault-injection suite: private TLS-enabled MariaDB and PostgreSQL (started
once per session, stopped and deleted at the end) and the results recorder.

Results: every case appends a :class:`~tests.faults._harness.Row`. At the end of the session the
rows go to ``$FG_FAULTS_RESULTS`` (JSON, default: the pytest temp dir) and, when
``FG_RELIABILITY_REPORT=docs/reliability.md`` is set, into that Markdown file's table.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from forkguard_lab.harness.provenance import checkout_commit
from forkguard_lab.harness.servers import (
    DBServer,
    ServerUnavailable,
    missing_binaries_message,
    private_mariadb,
    private_postgres,
)

from ._harness import Certs, Row, make_certs
from .report import write_report


@pytest.fixture(scope="session")
def certs() -> Iterator[Certs]:
    if shutil.which("openssl") is None:
        pytest.skip("the TLS cases need the openssl CLI")
    directory = tempfile.mkdtemp(prefix="fg-faults-tls-")
    uid = gid = -1
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")  # PostgreSQL runs as this user and must own its key
            uid, gid = pw.pw_uid, pw.pw_gid
        except KeyError:
            pass
    try:
        yield make_certs(directory, uid, gid)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# The lab's throwaway servers acknowledge commits they have not yet handed to the OS
# (innodb_flush_log_at_trx_commit=0, synchronous_commit=off): a SIGKILL of the server then
# loses acknowledged writes (62 and 22 of them in test_hard_crash.py's first run). These
# settings write the log at every commit, so a *process* crash keeps every acknowledged write;
# fsync stays off (an OS crash is not among the faults), so they cost little. Later options win.
DURABLE_ON_PROCESS_CRASH = {
    "mysql": ["--innodb-flush-log-at-trx-commit=2"],
    "postgresql": ["-c", "synchronous_commit=on"],
}


@contextlib.contextmanager
def _started(factory: Callable[..., Any], args: list[str]) -> Iterator[DBServer]:
    """Enter a private-server context, trying twice: on a busy shared machine the first
    ``mariadb-install-db`` / ``initdb`` occasionally times out. Skips if both attempts fail."""
    for attempt in (1, 2):
        stack = contextlib.ExitStack()
        try:
            srv = stack.enter_context(factory(args))
        except ServerUnavailable as exc:
            stack.close()
            if attempt == 2:
                pytest.skip(str(exc))
            time.sleep(2)
            continue
        with stack:
            yield srv
        return


@pytest.fixture(scope="session")
def mariadb(certs: Certs) -> Iterator[DBServer]:
    """A private MariaDB with TLS available (plain connections are still accepted)."""
    missing = missing_binaries_message(["mysql"])
    if missing:
        pytest.skip(missing)
    args = [f"--ssl-ca={certs.ca}", f"--ssl-cert={certs.cert}", f"--ssl-key={certs.key}",
            *DURABLE_ON_PROCESS_CRASH["mysql"]]  # fmt: skip
    with _started(private_mariadb, args) as srv:
        yield srv


@pytest.fixture(scope="session")
def postgres(certs: Certs) -> Iterator[DBServer]:
    """A private PostgreSQL with ``ssl=on`` (plain connections are still accepted)."""
    missing = missing_binaries_message(["postgresql"])
    if missing:
        pytest.skip(missing)
    args = ["-c", "ssl=on", "-c", f"ssl_cert_file={certs.cert}", "-c",
            f"ssl_key_file={certs.key}", *DURABLE_ON_PROCESS_CRASH["postgresql"]]  # fmt: skip
    with _started(private_postgres, args) as srv:
        yield srv


class Recorder:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.started = time.time()
        self.commit = checkout_commit()  # before the run: the code the rows come from

    def add(self, row: Row) -> None:
        self.rows.append(row.as_dict())
        print(f"\nRELIABILITY {json.dumps(row.as_dict())}")


@pytest.fixture(scope="session")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    out = os.environ.get("FG_FAULTS_RESULTS") or str(
        tmp_path_factory.getbasetemp() / "reliability.json"
    )
    doc = {"started": rec.started, "seconds": round(time.time() - rec.started, 1),
           "commit": rec.commit, "rows": rec.rows}  # fmt: skip
    with open(out, "w") as fh:
        json.dump(doc, fh, indent=1)
    report = os.environ.get("FG_RELIABILITY_REPORT")
    if report and rec.rows:
        write_report(doc, report)
