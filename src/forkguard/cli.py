"""The ``forkguard`` command: ``doctor`` and ``version``, plus commands other packages add.

Each subcommand lives in its own module and owns its arguments; this module only dispatches,
so ``forkguard --help`` stays fast and a missing optional dependency only affects its command.
Other distributions add commands through the ``forkguard.commands`` entry-point group (name ->
``module:main``, ``main(argv) -> int``); the library itself knows none of them by name.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from importlib import import_module, metadata

COMMAND_GROUP = "forkguard.commands"
_BUILTIN = {
    "doctor": (
        "forkguard.doctor.cli:main",
        "find database connections a pre-fork master would leak",
    ),
    "version": ("", "print forkguard's version"),
}


def _plugin_commands() -> dict[str, tuple[str, str]]:
    """Commands registered by installed distributions, ``name -> (module:main, help)``."""
    found: dict[str, tuple[str, str]] = {}
    for entry in _entry_points(COMMAND_GROUP):
        if entry.name not in _BUILTIN:
            found[entry.name] = (entry.value, _summary(entry))
    return dict(sorted(found.items()))


def _entry_points(group: str) -> Sequence[metadata.EntryPoint]:
    if sys.version_info >= (3, 10):
        return list(metadata.entry_points(group=group))
    # Python 3.9's entry_points() returns a dict of groups.
    return list(metadata.entry_points().get(group, ()))


def _summary(entry: metadata.EntryPoint) -> str:
    """The command module's ``HELP`` (imported only to print the usage)."""
    try:
        module = import_module(entry.module)
    except ImportError as exc:
        return f"(cannot load: {exc})"
    help_ = getattr(module, "HELP", None) or (module.__doc__ or "").strip()
    return str(help_).splitlines()[0] if help_ else ""


def _commands() -> dict[str, tuple[str, str]]:
    return {**_BUILTIN, **_plugin_commands()}


def _usage(commands: dict[str, tuple[str, str]]) -> str:
    lines = ["usage: forkguard COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in commands.items()]
    lines += ["", "Run `forkguard COMMAND --help` for a command's options."]
    return "\n".join(lines)


def _load(target: str) -> Callable[[list[str]], int]:
    module_name, _, attr = target.partition(":")
    main: Callable[[list[str]], int] = getattr(import_module(module_name), attr or "main")
    return main


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    commands = _commands()
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage(commands))
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command in ("version", "--version"):
        from . import __version__

        print(f"forkguard {__version__}")
        return 0
    if command not in commands:
        print(f"forkguard: unknown command {command!r}\n\n{_usage(commands)}", file=sys.stderr)
        return 2
    try:
        run = _load(commands[command][0])
    except ImportError as exc:
        print(
            f"forkguard {command}: cannot load ({exc}). Install the extras it needs.",
            file=sys.stderr,
        )
        return 2
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
