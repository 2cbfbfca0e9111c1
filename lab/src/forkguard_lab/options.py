"""Command-line values the lab's modes share: comma lists, ``--db`` URLs, the usage error."""

from __future__ import annotations

from collections.abc import Sequence

from .matrix import Target


class UsageError(Exception):
    """A bad command-line value: the message is printed, the exit status is 2."""


def csv_list(value: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise UsageError(f"--{what}: empty list")
    bad = [v for v in items if v not in allowed]
    if bad:
        raise UsageError(f"--{what}: unknown {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


def targets_from_urls(urls: Sequence[str]) -> dict[str, Target]:
    from sqlalchemy.engine import make_url

    out: dict[str, Target] = {}
    for raw in urls:
        try:
            url = make_url(raw)
        except Exception as exc:
            raise UsageError(f"--db {raw!r}: not a database URL ({exc})") from exc
        backend = url.get_backend_name()
        if backend in ("mariadb",):
            backend = "mysql"
        if backend not in ("mysql", "postgresql"):
            raise UsageError(f"--db {raw!r}: only mysql:// and postgresql:// URLs are supported")
        if url.host not in (None, "127.0.0.1", "localhost", "::1"):
            raise UsageError(f"--db {raw!r}: the lab only talks to servers on 127.0.0.1")
        if backend in out:
            raise UsageError(f"--db: two URLs for {backend}")
        out[backend] = Target(
            kind=backend,
            host="127.0.0.1",
            port=url.port or (3306 if backend == "mysql" else 5432),
            user=url.username or ("root" if backend == "mysql" else "postgres"),
            password=url.password if isinstance(url.password, str) else None,
            private=False,
        )
    return out
