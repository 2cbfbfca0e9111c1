"""The public API, pinned: what each public module exports, and nothing of the machinery.

A name added to or removed from these lists is an API change; make it on purpose."""

from __future__ import annotations

import importlib
import types

import pytest

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
    "forkguard.doctor": ["Finding", "ProbeError", "Spec", "analyze", "run_probe"],
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
