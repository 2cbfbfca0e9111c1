"""The ``forkguard`` command: ``doctor``, ``lab``, ``bench`` and ``version``.

Each subcommand lives in its own package and owns its arguments; this module only dispatches,
so ``forkguard --help`` stays fast and a missing optional dependency only affects its command.
"""

from __future__ import annotations

import sys
from importlib import import_module

_COMMANDS = {
    "doctor": ("forkguard.doctor.cli", "find database connections a pre-fork master would leak"),
    "lab": ("forkguard.lab.cli", "reproduce the fork bug under uWSGI/gunicorn; compare every fix"),
    "bench": ("forkguard.bench.cli", "measure forkguard's cost and preloading's savings"),
    "version": ("", "print forkguard's version"),
}


def _usage() -> str:
    lines = ["usage: forkguard COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in _COMMANDS.items()]
    lines += ["", "Run `forkguard COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command in ("version", "--version"):
        from . import __version__

        print(f"forkguard {__version__}")
        return 0
    if command not in _COMMANDS:
        print(f"forkguard: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name = _COMMANDS[command][0]
    try:
        module = import_module(module_name)
    except ImportError as exc:
        print(
            f"forkguard {command}: cannot load ({exc}). "
            "Install the extras it needs: pip install 'forkguard[lab]'",
            file=sys.stderr,
        )
        return 2
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
