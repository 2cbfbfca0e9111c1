"""What ``--app TARGET`` names, resolved to a module, a WSGI attribute and a directory.

Four spellings, the ones a deployment already has:

* ``package.module:attr`` - a WSGI callable (Flask's ``app``, a factory's result);
* ``package.module`` - a module with ``application`` (Django's ``project/wsgi.py``) or ``app``;
* ``deploy/uwsgi.ini`` - its ``[uwsgi]`` section's ``module`` (or ``wsgi-file``), ``chdir``
  and ``env`` lines;
* ``gunicorn.conf.py`` - its ``wsgi_app``, ``chdir`` and ``raw_env`` settings (the file is
  run, as gunicorn itself runs it).

The lab serves the app with its own server flags (workers, recycling, timeouts), so of a
config file it takes only where the app is and what environment it needs.
"""

from __future__ import annotations

import configparser
import os
import re
import runpy
from dataclasses import dataclass, field
from typing import Optional

_MODULE_RE = re.compile(r"^[A-Za-z_][\w.]*$")


class TargetError(ValueError):
    """``--app`` names nothing the lab can serve; the message says what to write instead."""


@dataclass(frozen=True)
class AppTarget:
    """The user's app: ``module`` (imported with ``chdir`` on ``sys.path``) and its WSGI
    ``attr`` (None: ``application``, else ``app``), plus environment from a config file."""

    module: str
    attr: Optional[str]
    chdir: str
    env: dict[str, str] = field(default_factory=dict)
    name: Optional[str] = None  # what the table and the pages call it (``--name``)

    @property
    def spec(self) -> str:
        return f"{self.module}:{self.attr}" if self.attr else self.module

    @property
    def label(self) -> str:
        return self.name or self.spec


def parse_target(spec: str, chdir: Optional[str] = None) -> AppTarget:
    """``--app`` (and ``--chdir``) -> :class:`AppTarget`; :class:`TargetError` if unusable."""
    base = os.path.abspath(chdir or os.getcwd())
    if not os.path.isdir(base):
        raise TargetError(f"--chdir {chdir}: no such directory")
    path = spec if os.path.isabs(spec) else os.path.join(base, spec)
    if spec.endswith(".ini"):
        return _from_uwsgi_ini(path)
    if spec.endswith(".py") and os.path.isfile(path):
        return _from_gunicorn_conf(path, base)
    return _from_module_spec(spec, base, where="--app")


def _from_module_spec(
    spec: str, chdir: str, *, where: str, env: Optional[dict[str, str]] = None
) -> AppTarget:
    module, _, attr = spec.partition(":")
    if not _MODULE_RE.match(module) or (attr and not attr.isidentifier()):
        raise TargetError(
            f"{where} {spec!r}: expected package.module:app, package.module (a Django "
            "wsgi module), a uWSGI .ini or a gunicorn config .py file"
        )
    return AppTarget(module, attr or None, chdir, dict(env or {}))


def _from_uwsgi_ini(path: str) -> AppTarget:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_string(_without_duplicate_keys(fh.read()), source=path)
    except (OSError, configparser.Error) as exc:
        raise TargetError(f"--app {path}: cannot read it as a uWSGI ini ({exc})") from exc
    if not parser.has_section("uwsgi"):
        raise TargetError(f"--app {path}: no [uwsgi] section")
    sec = parser["uwsgi"]
    chdir = os.path.join(os.path.dirname(path), sec.get("chdir", "."))
    env = dict(line.split("=", 1) for line in _env_lines(path) if "=" in line)
    if sec.get("module"):
        spec = sec["module"]
        if sec.get("callable") and ":" not in spec:
            spec += ":" + sec["callable"]
        return _from_module_spec(spec, os.path.abspath(chdir), where=f"{path} module", env=env)
    if sec.get("wsgi-file"):
        wsgi_file = os.path.join(chdir, sec["wsgi-file"])
        module = os.path.splitext(os.path.basename(wsgi_file))[0]
        return AppTarget(
            module, sec.get("callable"), os.path.dirname(os.path.abspath(wsgi_file)), env
        )
    raise TargetError(f"--app {path}: its [uwsgi] section has no module or wsgi-file")


def _without_duplicate_keys(text: str) -> str:
    """uWSGI ini files repeat keys (``env = A=1`` / ``env = B=2``); configparser does not
    allow that, and the lab reads ``env`` lines separately (:func:`_env_lines`)."""
    return "\n".join(line for line in text.splitlines() if not _is_env_line(line))


def _is_env_line(line: str) -> bool:
    return line.strip().startswith("env") and line.split("=", 1)[0].strip() == "env"


def _env_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return [line.split("=", 1)[1].strip() for line in fh if _is_env_line(line)]


def _from_gunicorn_conf(path: str, chdir: str) -> AppTarget:
    try:
        conf = runpy.run_path(path)
    except Exception as exc:
        raise TargetError(f"--app {path}: running the gunicorn config failed: {exc!r}") from exc
    app = conf.get("wsgi_app")
    if not isinstance(app, str):
        raise TargetError(f"--app {path}: the gunicorn config sets no wsgi_app = 'module:app'")
    where = conf.get("chdir")
    base = os.path.join(os.path.dirname(path), where) if isinstance(where, str) else chdir
    raw_env = conf.get("raw_env") or []
    env = dict(item.split("=", 1) for item in raw_env if isinstance(item, str) and "=" in item)
    return _from_module_spec(app, os.path.abspath(base), where=f"{path} wsgi_app", env=env)
