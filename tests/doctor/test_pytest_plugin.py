"""The pytest plugin, run as a user would: a separate pytest session with ``-p``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import APPS, HELD, mark


def pytest_session(
    tmp_path: Path, *options: str, ini: str = ""
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_something.py").write_text("def test_ok():\n    assert True\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n" + ini)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "forkguard.pytest_plugin", "-q", *options],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_app_leaving_a_connection_open_fails_the_session(tmp_path: Path) -> None:
    proc = pytest_session(tmp_path, ini=f"forkguard_app = --chdir {APPS} fsa_mysql:app\n")
    assert proc.returncode == 1, proc.stdout
    assert "1 passed" in proc.stdout  # the tests themselves ran
    assert "forkguard: FAILED" in proc.stdout
    assert f"(at {mark('fsa_mysql.py', 'create_all')})" in proc.stdout


@pytest.mark.parametrize("app", ["async_pg", "async_mysql"])
def test_asyncio_engine_connection_left_at_import_fails_the_session(
    tmp_path: Path, app: str
) -> None:
    proc = pytest_session(tmp_path, ini=f"forkguard_app = --chdir {APPS} {app}:app\n")
    assert proc.returncode == 1, proc.stdout
    assert "forkguard: FAILED" in proc.stdout
    assert f"(at {mark(f'{app}.py', 'connect')})" in proc.stdout


@pytest.mark.parametrize("app", ["async_pg_disposed", "async_mysql_disposed"])
def test_asyncio_engine_disposed_at_import_passes(tmp_path: Path, app: str) -> None:
    proc = pytest_session(tmp_path, ini=f"forkguard_app = --chdir {APPS} {app}:app\n")
    assert proc.returncode == 0, proc.stdout
    assert "nothing left open at import" in proc.stdout


def test_checked_out_connection_fails_at_the_line_holding_it(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "held.py").write_text(HELD)
    proc = pytest_session(tmp_path, "--forkguard-app", f"--chdir {app_dir} held")
    assert proc.returncode == 1, proc.stdout
    assert f"(at {app_dir / 'held.py'}:5)" in proc.stdout


def test_clean_app_passes(tmp_path: Path) -> None:
    proc = pytest_session(tmp_path, "--forkguard-app", f"--chdir {APPS} clean_app:app")
    assert proc.returncode == 0, proc.stdout
    assert "nothing left open at import" in proc.stdout


def test_command_line_option_wins_over_ini(tmp_path: Path) -> None:
    proc = pytest_session(
        tmp_path,
        "--forkguard-app",
        f"--chdir {APPS} clean_app:app",
        ini=f"forkguard_app = --chdir {APPS} fsa_mysql:app\n",
    )
    assert proc.returncode == 0, proc.stdout


def test_fail_on_warnings(tmp_path: Path) -> None:
    # big_pool opens nothing at import (passes by default) but has a pool-recycle warning.
    ini = f"forkguard_app = --chdir {APPS} big_pool\n"
    assert pytest_session(tmp_path, ini=ini).returncode == 0
    proc = pytest_session(tmp_path, ini=ini + "forkguard_fail_on = warnings\n")
    assert proc.returncode == 1, proc.stdout
    assert "pooled connections outlive" in proc.stdout


def test_import_error_fails_the_session(tmp_path: Path) -> None:
    proc = pytest_session(tmp_path, "--forkguard-app", f"--chdir {APPS} broken_app:app")
    assert proc.returncode == 1, proc.stdout
    assert "KeyError: 'database_url'" in proc.stdout


def test_bad_setting_is_a_usage_error(tmp_path: Path) -> None:
    proc = pytest_session(tmp_path, "--forkguard-app", "--no-such-flag app:app")
    assert proc.returncode == 4  # pytest's usage-error exit code
    assert "unrecognized arguments: --no-such-flag" in proc.stderr


def test_without_an_app_the_plugin_does_nothing(tmp_path: Path) -> None:
    proc = pytest_session(tmp_path)
    assert proc.returncode == 0
    assert "forkguard" not in proc.stdout
