"""The public API, pinned: what each public module exports, and nothing of the machinery.

A name added to or removed from these lists is an API change; make it on purpose."""

from __future__ import annotations

import ast
import importlib
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = {
    "forkguard": [
        "MODES",
        "ConfigurationError",
        "ForkguardError",
        "Guarded",
        "InheritedConnectionError",
        "configure",
        "install",
        "is_installed",
        "protect",
        "stats",
        "track",
        "uninstall",
    ],
    "forkguard.sqlalchemy": ["install", "protect", "uninstall"],
    "forkguard.django": ["install", "uninstall"],
    "forkguard.celery": ["install"],
    "forkguard.asyncio": ["install", "uninstall"],
    # Client adapters: installed by forkguard.install() when their library is imported.
    "forkguard.urllib3": [],
    "forkguard.httpx": [],
    "forkguard.pika": [],
    "forkguard.amqp": [],
    "forkguard.doctor": ["Finding", "ProbeError", "Spec", "analyze", "run_probe"],
    # For measuring forkguard itself (the benchmarks), not for applications.
    "forkguard.testing": ["fork_check", "has_fork_marker"],
}
# Names the package face must not leak (they were once reachable as forkguard.<name>).
NOT_ON_THE_FACE = ["settings", "log", "load_environment", "sqlalchemy_available"]


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_all_is_pinned(module: str) -> None:
    if module == "forkguard.django":
        pytest.importorskip("django")
    if module == "forkguard.celery":
        pytest.importorskip("celery")
    assert sorted(importlib.import_module(module).__all__) == sorted(PUBLIC[module])


def test_the_face_holds_only_the_api() -> None:
    import forkguard

    public = {
        name
        for name, value in vars(forkguard).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert public == set(PUBLIC["forkguard"])
    for name in NOT_ON_THE_FACE:
        assert not hasattr(forkguard, name), name


def test_integration_installs_take_forkguards_options() -> None:
    import forkguard
    import forkguard.sqlalchemy

    assert forkguard.sqlalchemy.install is forkguard.install
    assert not hasattr(forkguard.sqlalchemy, "after_fork_in_child")
    assert not hasattr(forkguard.sqlalchemy, "safe_url")


def _private_uses(source: str) -> list[str]:
    """forkguard's private modules and names that ``source`` imports or reaches as attributes
    (dunders such as ``forkguard.__file__`` are public)."""

    def private(name: str) -> bool:
        return name.startswith("_") and not name.endswith("__")

    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("forkguard"):
            module = node.module or ""
            names = [alias.name for alias in node.names]
            if module.split(".")[0] == "forkguard" and (
                any(private(part) for part in module.split(".")) or any(map(private, names))
            ):
                found.append(f"from {module} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            found += [
                alias.name
                for alias in node.names
                if alias.name.split(".")[0] == "forkguard"
                and any(private(part) for part in alias.name.split("."))
            ]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "forkguard"
            and private(node.attr)
        ):
            found.append(f"forkguard.{node.attr}")
    return found


def test_private_uses_finds_each_way_in() -> None:
    source = (
        "import forkguard\nimport forkguard._fork\nfrom forkguard import _fork\n"
        "from forkguard._fork import check\nforkguard._fork.check()\nforkguard.__file__\n"
        "from forkguard.testing import fork_check\n"
    )
    assert _private_uses(source) == [
        "forkguard._fork",
        "from forkguard import _fork",
        "from forkguard._fork import check",
        "forkguard._fork",
    ]


def test_the_tools_use_only_the_public_api() -> None:
    """Imports run one way: the lab and the benchmarks (forkguard-lab) use what any user of
    forkguard can, plus the documented ``forkguard.testing`` hooks; never its private modules."""
    offenders = {
        str(path.relative_to(ROOT)): uses
        for path in sorted((ROOT / "lab" / "src").rglob("*.py"))
        if (uses := _private_uses(path.read_text()))
    }
    assert not offenders, offenders
