"""The post-fork hooks the master would run in each worker, and what their source does."""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger("forkguard.doctor")


def collect_postfork_hooks(gunicorn_config: dict[str, Any]) -> list[dict[str, Any]]:
    """``uwsgidecorators.postfork`` functions, then gunicorn's ``post_fork`` and
    ``post_worker_init`` from its config."""
    hooks = []
    decorators = sys.modules.get("uwsgidecorators")
    for fn in getattr(decorators, "postfork_chain", []) if decorators is not None else []:
        hooks.append(_hook_facts(fn, "uwsgidecorators.postfork"))
    for name in ("post_fork", "post_worker_init"):
        if callable(gunicorn_config.get(name)):
            hooks.append(_hook_facts(gunicorn_config[name], f"gunicorn {name}"))
    return hooks


def _hook_facts(fn: Any, source: str) -> dict[str, Any]:
    import inspect

    fn = getattr(fn, "f", fn)  # uwsgidecorators.postfork wraps the function in .f
    fact: dict[str, Any] = {"name": getattr(fn, "__qualname__", repr(fn)), "source": source}
    try:
        code = inspect.getsource(fn)
        fact["defined_at"] = f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
    except (OSError, TypeError) as exc:
        log.debug("forkguard doctor: no source for hook %r: %s", fn, exc)
        code = ""
    fact["calls_dispose"] = ".dispose(" in code
    fact["calls_install"] = _calls_forkguard_install(fn, code)
    fact["dispose_close_false"] = "close=False" in code
    fact["closes_sessions"] = any(
        w in code for w in ("close_all", ".remove(", "close_all_sessions")
    )
    return fact


def _calls_forkguard_install(fn: Any, code: str) -> bool:
    """``forkguard.install()`` (or ``forkguard.asyncio.install()``, or ``install()`` imported
    from forkguard) in a hook's source."""
    if "install(" not in code:
        return False
    if "forkguard" in code:
        return True
    install = getattr(fn, "__globals__", {}).get("install")
    return str(getattr(install, "__module__", "")).startswith("forkguard")
