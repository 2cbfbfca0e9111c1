"""What the user tells the lab about their app besides where it is: the URLs to drive, the
environment it needs (with private databases filled in) and a setup command.

``--env NAME=VALUE`` may name a private database the lab makes for each cell (on its private
server, or the one ``--db`` gives): ``{mysql}`` / ``{postgresql}`` become a URL such as
``postgresql://postgres@127.0.0.1:PORT/fg_lab_...``; ``{mysql+pymysql}`` and the like keep the
driver part, for SQLAlchemy URLs; ``{postgresql.host}``, ``.port``, ``.name``, ``.user`` and
``.password`` are the parts, for settings that take them one by one (Django's ``DATABASES``).
Every cell gets a fresh database, so ``--setup`` (migrations, fixtures) runs once per cell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import quote

_PLACEHOLDER_RE = re.compile(r"\{(mysql|postgresql)(\+\w+|\.(?:host|port|name|user|password))?\}")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class SettingsError(ValueError):
    """A bad ``--url`` / ``--urls`` / ``--env`` value; the message names it."""


@dataclass(frozen=True)
class Database:
    """One cell's private database: where it is and what it is called."""

    backend: str  # "mysql" or "postgresql"
    host: str
    port: int
    user: str
    password: Optional[str]
    name: str

    def fill(self, suffix: str) -> str:
        """The value of ``{backend<suffix>}``."""
        if suffix.startswith("."):
            value = getattr(self, suffix[1:])
            return "" if value is None else str(value)
        auth = quote(self.user, safe="") + (
            f":{quote(self.password, safe='')}" if self.password else ""
        )
        return f"{self.backend}{suffix}://{auth}@{self.host}:{self.port}/{self.name}"


def parse_urls(urls: list[str], urls_file: Optional[str]) -> list[str]:
    """``--url`` values and ``--urls`` lines -> load ops ``"METHOD /path"`` (GET by default)."""
    lines = list(urls)
    if urls_file:
        try:
            with open(urls_file, encoding="utf-8") as fh:
                lines += [ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")]
        except OSError as exc:
            raise SettingsError(f"--urls {urls_file}: {exc.strerror}") from exc
    if not lines:
        raise SettingsError("--app needs at least one --url PATH (or --urls FILE)")
    return [_one_url(line) for line in lines]


def _one_url(line: str) -> str:
    method, _, path = line.strip().rpartition(" ")
    method = method.strip().upper() or "GET"
    if method not in _METHODS:
        raise SettingsError(f"--url {line!r}: unknown method {method} (use one of {_METHODS})")
    if path.startswith("http://") or path.startswith("https://"):
        raise SettingsError(f"--url {line!r}: give the path only (/...); the lab picks the port")
    if not path.startswith("/"):
        raise SettingsError(f"--url {line!r}: a path starts with /")
    return f"{method} {path}"


def parse_env(items: list[str]) -> dict[str, str]:
    """``--env NAME=VALUE`` values -> a dict (placeholders still in the values)."""
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise SettingsError(f"--env {item!r}: expected NAME=VALUE")
        env[name] = value
    return env


def backends_named(env: dict[str, str]) -> list[str]:
    """The private databases the environment's placeholders ask for."""
    return sorted({m.group(1) for v in env.values() for m in _PLACEHOLDER_RE.finditer(v)})


def fill_env(env: dict[str, str], database_for: Callable[[str], Database]) -> dict[str, str]:
    """The environment with every placeholder replaced by that backend's cell database."""

    def one(m: re.Match[str]) -> str:
        return database_for(m.group(1)).fill(m.group(2) or "")

    return {name: _PLACEHOLDER_RE.sub(one, value) for name, value in env.items()}
