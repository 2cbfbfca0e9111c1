"""Importing the target the way the master would: ``module:app``, a file, a gunicorn config, a
uWSGI ini or a Django settings module; and describing why that failed, when it did."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys
import traceback
import types
from typing import Any

from ._masters import Master, TargetError, gunicorn_master, prepend_sys_path, uwsgi_master
from ._recorders import recorder
from ._sites import tb_site


def load(spec: dict[str, Any]) -> tuple[Master, dict[str, Any]]:
    """Import ``spec``'s target as its master would: that master, and the gunicorn config's
    globals (empty without one)."""
    kind = spec["kind"]
    target: str | None = spec.get("target")
    prepend_sys_path(spec.get("pythonpath") or [])
    if kind == "uwsgi":
        return _load_uwsgi(spec["config"]), {}
    config: dict[str, Any] = {}
    if kind == "gunicorn":
        master, target, config = gunicorn_master(spec["config"], target)
    else:
        master = Master(server="python")
    recorder.phase = "app"
    assert target is not None
    module, attr = _import_target(kind, target)
    if attr:
        _resolve_attr(module, attr)
    elif kind == "gunicorn" and not hasattr(module, "application"):
        master.notes.append(
            f"gunicorn would look for `application` in {module.__name__!r}, which it lacks"
        )
    if not attr and _looks_like_django_settings(module) and importlib.util.find_spec("django"):
        _load_django(module, master)
    return master, config


def _load_uwsgi(config: str) -> Master:
    master, name, callable_ = uwsgi_master(config)
    recorder.phase = "app"
    module = _import_path(name) if name.endswith(".py") else importlib.import_module(name)
    if callable_ and not hasattr(module, callable_):
        raise TargetError(
            f"uWSGI would find no callable {callable_!r} in {module.__name__!r} "
            "(set `callable = ...` in the ini)"
        )
    return master


def _import_target(kind: str, target: str) -> tuple[types.ModuleType, str | None]:
    """Import ``module``, ``module:attr`` or a file; the module and the attribute to resolve."""
    if kind == "path" or (target.endswith(".py") and ":" not in target):
        module_part, attr = target, None
    else:
        module_part, _, attr_str = target.partition(":")
        attr = attr_str or None
    if module_part.endswith(".py") or os.sep in module_part:
        return _import_path(module_part), attr
    return importlib.import_module(module_part), attr


def _import_path(path: str) -> types.ModuleType:
    """Import a ``.py`` file under its own module name, its directory first on sys.path."""
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise TargetError(f"no such file: {path}")
    directory, filename = os.path.split(path)
    sys.path.insert(0, directory)
    name = filename[:-3] if filename.endswith(".py") else filename
    if name == "__init__":
        directory, name = os.path.split(directory)
        sys.path[0] = directory
    return importlib.import_module(name)


def _resolve_attr(module: types.ModuleType, expr: str) -> Any:
    """``app``, ``create_app()`` or ``create_app('prod')``, as gunicorn's import_app does."""
    name, call = _parse_attr(expr)
    if not hasattr(module, name):
        raise TargetError(f"module {module.__name__!r} has no attribute {name!r}")
    obj = getattr(module, name)
    if call is not None:
        obj = obj(*call[0], **call[1])
    return obj


def _parse_attr(expr: str) -> tuple[str, tuple[list[Any], dict[str, Any]] | None]:
    """The name in ``expr`` and, for a call, its literal positional and keyword arguments."""
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError as exc:
        raise TargetError(f"cannot parse {expr!r} as an attribute name or function call") from exc
    if isinstance(node, ast.Name):
        return node.id, None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise TargetError(f"cannot parse {expr!r} as an attribute name or function call")
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {str(k.arg): ast.literal_eval(k.value) for k in node.keywords}
    except ValueError as exc:
        raise TargetError(f"the arguments in {expr!r} must be literals") from exc
    return node.func.id, (args, kwargs)


def _looks_like_django_settings(module: types.ModuleType) -> bool:
    return hasattr(module, "INSTALLED_APPS") and hasattr(module, "DATABASES")


def _load_django(settings: types.ModuleType, master: Master) -> None:
    """A settings module: do what its wsgi.py would, DJANGO_SETTINGS_MODULE then the app."""
    os.environ["DJANGO_SETTINGS_MODULE"] = settings.__name__
    from django.core.wsgi import get_wsgi_application

    get_wsgi_application()
    master.notes.append(
        f"{settings.__name__} is a Django settings module: loaded as its wsgi.py would "
        "(django.setup() and get_wsgi_application())"
    )


def import_error(exc: BaseException) -> dict[str, Any]:
    """Why the target could not be imported: the exception, the user's line, the traceback."""
    location = tb_site(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.filename:
        location = f"{exc.filename}:{exc.lineno}"
    message = str(exc)
    if isinstance(exc, SystemExit):
        message = f"the app called sys.exit({exc.code!r}) while being imported"
    return {
        "type": _type_name(exc),
        "message": message,
        "location": location,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "target_error": isinstance(exc, TargetError),
        "cwd": os.getcwd(),
    }


def _type_name(exc: BaseException) -> str:
    """A builtin exception (and the doctor's own TargetError) by its bare name."""
    cls = type(exc)
    if cls.__module__ in ("builtins", "__main__") or cls is TargetError:
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
