"""``forkguard lab --app``: a user's app (``userapps/shop.py``, written without the lab or
forkguard) under real uWSGI and gunicorn, and the lab's answers to bad input.

The shop opens a pooled connection at import. Preloaded without a fix, the workers share it
(the twin: the ``none`` cells must show errors); with forkguard's one line first in the WSGI
module, every cell must be clean; the lazy control must be clean too.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from forkguard_lab.cli import main as lab_main
from forkguard_lab.harness.servers import missing_binaries_message
from forkguard_lab.labdocs import APPS_HEADING, write_app_docs, write_docs
from forkguard_lab.matrix import CellResult
from forkguard_lab.userapp.cell import wrapper_source
from forkguard_lab.userapp.run import missing_servers
from forkguard_lab.userapp.settings import Database, SettingsError, fill_env, parse_urls
from forkguard_lab.userapp.target import TargetError, parse_target

APPS = Path(__file__).parent / "userapps"
SHOP = [
    "--app", "shop:app", "--chdir", str(APPS),
    "--url", "/items/3", "--url", "/count",
    "--env", "SHOP_DATABASE_URL={mysql+pymysql}",
    "--setup", f"{sys.executable} -c 'import shop'",
]  # fmt: skip


@pytest.fixture(scope="module")
def shop_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    missing = missing_binaries_message(["mysql"])
    if missing:
        pytest.skip(missing)
    out = tmp_path_factory.mktemp("lab-app")
    rc = lab_main([*SHOP, "--requests", "160", "--budget", "240", "--out", str(out),
                   "--keep-logs"])  # fmt: skip
    doc = json.loads((out / "lab.json").read_text())
    return {"rc": rc, "doc": doc, "dir": out}


def _cell(run: dict[str, Any], server: str, strategy: str) -> dict[str, Any]:
    [cell] = [c for c in run["doc"]["cells"] if (c["server"], c["strategy"]) == (server, strategy)]
    assert cell["error"] is None, f"harness error: {cell} (logs in {run['dir']}/logs)"
    return cell


@pytest.mark.slow
@pytest.mark.parametrize("server", ["uwsgi", "gunicorn"])
def test_forkguard_cells_of_a_users_app_are_clean(shop_run: dict[str, Any], server: str) -> None:
    cell = _cell(shop_run, server, "forkguard")
    where = f"{server}/forkguard: {cell} (logs in {shop_run['dir']}/logs)"
    assert cell["requests"] >= 50, where
    assert cell["worker_pids_seen"] > 4, f"{where}: workers were never recycled"
    assert cell["clean"], where
    assert cell["workers_pss_kb"] > 0, f"{where}: {cell['pss_not_measured']}"
    assert cell["respawn_status"] == "ok", where
    assert shop_run["rc"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("server", ["uwsgi", "gunicorn"])
def test_without_forkguard_the_users_app_breaks(shop_run: dict[str, Any], server: str) -> None:
    """The twin: the same app, preloaded with no fix, fails on the shared connection."""
    cell = _cell(shop_run, server, "none")
    assert not cell["clean"]
    assert cell["http_errors"] > 0 and cell["db_errors"] > 0, cell


@pytest.mark.slow
def test_the_lazy_control_is_clean_and_the_table_names_the_app(shop_run: dict[str, Any]) -> None:
    for server in ("uwsgi", "gunicorn"):
        assert _cell(shop_run, server, "lazy")["clean"]
    text = (shop_run["dir"] / "lab.txt").read_text()
    assert "forkguard lab --app shop:app" in text
    assert "forkguard: 2/2 cells clean" in text
    assert "wrong ans" in text and " app " in text.splitlines()[2]


DJSHOP = [
    "--app", "djshop.wsgi", "--chdir", str(APPS),
    "--url", "/double/3", "--url", "/double/4",
    *("--env", "DJSHOP_DB_NAME={postgresql.name}", "--env", "DJSHOP_DB_HOST={postgresql.host}"),
    *("--env", "DJSHOP_DB_PORT={postgresql.port}", "--env", "DJSHOP_DB_USER={postgresql.user}"),
]  # fmt: skip


@pytest.mark.slow
def test_a_django_project_by_its_wsgi_module(tmp_path: Path) -> None:
    """A Django project that checks its database at startup, with persistent connections:
    preloaded without a fix, the workers share the master's connection; forkguard's cell is
    clean."""
    missing = missing_binaries_message(["postgresql"])
    if missing:
        pytest.skip(missing)
    rc = lab_main([*DJSHOP, "--servers", "uwsgi", "--strategies", "none,forkguard",
                   "--requests", "120", "--budget", "120", "--out", str(tmp_path)])  # fmt: skip
    run = {"doc": json.loads((tmp_path / "lab.json").read_text()), "dir": tmp_path}
    ours, bare = _cell(run, "uwsgi", "forkguard"), _cell(run, "uwsgi", "none")
    assert ours["clean"] and ours["requests"] >= 50, ours
    assert not bare["clean"], bare
    assert rc == 0


def test_an_app_that_does_not_import_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = lab_main(["--app", "broken:app", "--chdir", str(APPS), "--url", "/",
                   "--out", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert "broken:app does not import" in err
    assert "broken on purpose" in err


@pytest.mark.slow
def test_a_url_that_404s_in_every_cell_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = lab_main(["--app", "nodb:app", "--chdir", str(APPS), "--url", "/no-such-page",
                   "--servers", "gunicorn", "--strategies", "none", "--requests", "20",
                   "--out", str(tmp_path)])  # fmt: skip
    assert rc == 2
    assert "GET /no-such-page answered 404 in every cell: check --url" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--app", "not a module!", "--url", "/"], "expected package.module:app"),
        (["--app", "nodb:app"], "at least one --url"),
        (["--app", "nodb:app", "--url", "http://example.com/"], "give the path only"),
        (["--app", "nodb:app", "--url", "FETCH /"], "unknown method FETCH"),
        (["--app", "nodb:app", "--url", "/", "--env", "NOEQUALS"], "expected NAME=VALUE"),
        (["--app", "nodb:app", "--url", "/", "--drivers", "pymysql"], "--drivers: not with"),
        (["--app", "nodb:app", "--url", "/", "--strategies", "dispose"], "unknown dispose"),
        (["--app", "nodb:app", "--url", "/", "--chdir", "/no/such/dir"], "no such directory"),
        (["--app", "nodb:app", "--url", "/", "--setup", "exit 3"], "--setup failed before"),
        (["--app", "nodb:app", "--url", "/", "--docs", "/no/such/dir/lab.md"], "--docs"),
    ],
)
def test_bad_app_arguments_exit_2_with_the_reason(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "--chdir" not in argv:
        argv = [*argv, "--chdir", str(APPS)]
    assert lab_main([*argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_server_binary_is_named() -> None:
    assert missing_servers(["gunicorn"]) is None
    message = missing_servers(["gunicorn", "fg-no-such-server"])
    assert message is not None and "fg-no-such-server not found" in message


def test_targets_from_config_files(tmp_path: Path) -> None:
    ini = tmp_path / "deploy" / "uwsgi.ini"
    ini.parent.mkdir()
    ini.write_text("[uwsgi]\nchdir = ..\nmodule = shop.wsgi:application\nenv = A=1\n"
                   "env = B=two=2\nprocesses = 8\n")  # fmt: skip
    target = parse_target(str(ini))
    assert (target.module, target.attr, target.chdir) == ("shop.wsgi", "application", str(tmp_path))
    assert target.env == {"A": "1", "B": "two=2"}
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("wsgi_app = 'mysite.wsgi'\nraw_env = ['DJANGO_SETTINGS_MODULE=mysite.s']\n")
    target = parse_target(str(conf))
    assert (target.module, target.attr, target.label) == ("mysite.wsgi", None, "mysite.wsgi")
    assert target.env == {"DJANGO_SETTINGS_MODULE": "mysite.s"}
    (tmp_path / "empty.ini").write_text("[uwsgi]\nprocesses = 4\n")
    with pytest.raises(TargetError, match="no module or wsgi-file"):
        parse_target(str(tmp_path / "empty.ini"))


def test_placeholders_and_urls() -> None:
    db = Database("postgresql", "127.0.0.1", 5544, "postgres", None, "fg_lab_1_0")
    env = fill_env(
        {"URL": "{postgresql+psycopg2}", "PORT": "{postgresql.port}", "X": "{postgresql}?a=1"},
        {"postgresql": db}.__getitem__,
    )
    assert env == {
        "URL": "postgresql+psycopg2://postgres@127.0.0.1:5544/fg_lab_1_0",
        "PORT": "5544",
        "X": "postgresql://postgres@127.0.0.1:5544/fg_lab_1_0?a=1",
    }
    given = Database("mysql", "127.0.0.1", 3306, "app", "p@ss:/w", "fg_lab_1_0")
    assert given.fill("+pymysql") == "mysql+pymysql://app:p%40ss%3A%2Fw@127.0.0.1:3306/fg_lab_1_0"
    assert given.fill(".password") == "p@ss:/w"  # a part is given as it is
    assert parse_urls(["/a", "post /b"], None) == ["GET /a", "POST /b"]
    with pytest.raises(SettingsError):
        parse_urls([], None)


def test_the_wrapper_puts_forkguard_first_only_in_forkguard_cells(tmp_path: Path) -> None:
    target = parse_target("shop:app", str(APPS))
    assert wrapper_source(target, "forkguard").splitlines()[1:4] == [
        "import forkguard", "", "forkguard.install()"
    ]  # fmt: skip
    assert "import forkguard\n" not in wrapper_source(target, "none")
    named = parse_target("shop:app", str(APPS))
    assert replace(named, name='My "shop"').label == 'My "shop"'
    compile(wrapper_source(replace(named, name='My "shop"'), "none"), "w.py", "exec")


def _app_doc(label: str, reqs: int) -> dict[str, Any]:
    cell = CellResult("uwsgi", label, "forkguard", requests=reqs, requests_asked=reqs, ok=reqs,
                      checks_answers=False)  # fmt: skip
    meta = {"app": label, "servers": ["uwsgi"], "drivers": [label], "strategies": ["forkguard"],
            "max_requests": 20, "requests_per_cell": reqs, "elapsed_s": 1.0, "commit": "abc1234",
            "command": f"forkguard lab --app {label}"}  # fmt: skip
    return {"meta": meta, "cells": [cell.as_dict()]}


def test_app_blocks_in_the_lab_page_survive_each_other_and_the_matrix(tmp_path: Path) -> None:
    page = tmp_path / "lab.md"
    page.write_text("# matrix page\n\nthe matrix\n")
    write_app_docs(_app_doc("shop:app", 11), str(page))
    on_pg = _app_doc("shop:app", 44)
    on_pg["meta"]["databases"] = ["postgresql"]
    write_app_docs(on_pg, str(page))  # its own block: another database
    write_app_docs(_app_doc("mysite.wsgi", 22), str(page))
    write_app_docs(_app_doc("shop:app", 33), str(page))  # replaces its own block only
    text = page.read_text()
    assert text.startswith("# matrix page\n\nthe matrix\n")
    assert text.count("<!-- lab-app:shop:app:start -->") == 1
    assert (
        "<!-- lab-app:shop:app@postgresql:start -->" in text and "shop:app  forkguard    44" in text
    )
    assert "shop:app  forkguard    33" in text and "shop:app  forkguard    11" not in text
    assert "mysite.wsgi  forkguard    22" in text
    assert text.count(APPS_HEADING) == 1
    matrix_doc = json.loads(json.dumps(_app_doc("x", 1)))
    del matrix_doc["meta"]["app"]
    write_docs(matrix_doc, str(page), None)  # the matrix page again: the app blocks stay
    text = page.read_text()
    assert text.startswith("# `forkguard lab`: the matrix from a real run")
    assert "shop:app  forkguard    33" in text and "mysite.wsgi  forkguard    22" in text
