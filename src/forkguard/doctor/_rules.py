"""What every rule of the doctor is made of: a finding, the context it is judged in, a rule
(a predicate and the finding it makes) and the two ways a table of rules is applied."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Generic, Iterable, Sequence, TypeVar


@dataclass
class Finding:
    """One thing the doctor saw. ``error`` and ``warning`` make the exit code 1."""

    kind: str
    severity: str
    title: str
    detail: str
    fix: str
    location: str | None = None
    stack: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Context:
    """What the rules need to know about the master and the whole import."""

    master: dict[str, Any]
    workers: int | None
    hosts: int = 1  # hosts running the same app and pools against the same servers
    django: bool = False
    late_install: str | None = None  # a post-fork hook that calls forkguard.install()
    has_connections: bool = False
    forkguard_installed: bool = False  # the app calls forkguard.install() at import

    @property
    def preloaded(self) -> bool:
        """The master imports the app and forks: what the import leaves open is inherited."""
        return bool(self.master.get("preload", True)) and bool(self.master.get("forks", True))


S = TypeVar("S")


@dataclass(frozen=True)
class Rule(Generic[S]):
    """When ``applies`` holds for a subject (a connection, a server, a thread...), ``make``
    writes the finding about it."""

    applies: Callable[[S, Context], bool]
    make: Callable[[S, Context], Finding]


def always(subject: object, ctx: Context) -> bool:
    return True


def first_match(rules: Sequence[Rule[S]], subjects: Iterable[S], ctx: Context) -> list[Finding]:
    """For each subject, the finding of the first rule that applies (none if none does)."""
    findings = []
    for subject in subjects:
        rule = next((r for r in rules if r.applies(subject, ctx)), None)
        if rule is not None:
            findings.append(rule.make(subject, ctx))
    return findings


def every_match(rules: Sequence[Rule[S]], subjects: Iterable[S], ctx: Context) -> list[Finding]:
    """For each subject, the finding of every rule that applies, in the table's order."""
    return [rule.make(s, ctx) for s in subjects for rule in rules if rule.applies(s, ctx)]


# ---- words every rule shares ------------------------------------------------------------------


def who(workers: int | None) -> str:
    if workers is None:
        return "every worker inherits it"
    if workers == 1:
        return "the worker inherits it"
    return f"all {workers} workers inherit it"


def _where_to_install(master: dict[str, Any]) -> str:
    server = master.get("server")
    if server == "gunicorn":
        config = os.path.basename(str(master.get("config") or "gunicorn.conf.py"))
        return f"at the top of {config} (gunicorn runs it in the master, before it loads the app)"
    if server == "uwsgi":
        module = str(master.get("app") or "").partition(":")[0]
        return f"at the top of the module uWSGI loads ({module})"
    return "at the top of the module the server imports (your WSGI/ASGI module)"


def install(ctx: Context) -> str:
    """The one placement the doctor recommends: in the master, before the fork."""
    if ctx.django:
        return 'add "forkguard.django" to INSTALLED_APPS (`INSTALLED_APPS += ["forkguard.django"]`)'
    return f"add `import forkguard; forkguard.install()` {_where_to_install(ctx.master)}"


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
