"""``forkguard doctor TARGET``: what would every worker of a pre-fork server inherit?

Exit codes: 0 clean, 1 findings (errors or warnings), 2 the target could not be imported or
the command line is wrong.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import Callable, NoReturn, TypeVar

from .findings import EXIT_ERROR, analyze
from .report import format_import_error, render_json, render_text
from .runner import ProbeError, Spec, run_probe

log = logging.getLogger("forkguard.doctor")

_N = TypeVar("_N", int, float)

_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

EPILOG = """\
targets:
  module:app            import `module` and look up `app` (or call `create_app()`), like gunicorn
  module                import `module` only
  path/to/app.py        import that file as a module, its directory first on sys.path
  -c gunicorn.conf.py   execute the config like gunicorn: wsgi_app, preload_app, workers, chdir
  --uwsgi app.ini       read module / wsgi-file / processes / lazy-apps from the [uwsgi] section

exit codes: 0 clean, 1 findings, 2 could not import the target (or bad arguments)
"""


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> _Parser:
    parser = _Parser(
        prog="forkguard doctor",
        description=(
            "Import an app the way a pre-fork master (gunicorn --preload, uWSGI without "
            "lazy-apps) does, in a separate process, and report what every worker would "
            "inherit: open database connections, threads, sockets, event loops; and check "
            "each engine's pool against the database server's limits."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", nargs="?", help="module:app, module or path/to/app.py")
    parser.add_argument(
        "-c", "--config", metavar="FILE", help="a gunicorn config file (gunicorn.conf.py)"
    )
    parser.add_argument("--uwsgi", metavar="INI", help="a uWSGI ini file ([uwsgi] section)")
    parser.add_argument(
        "-w", "--workers", type=_positive_int, metavar="N", help="worker count (overrides config)"
    )
    parser.add_argument(
        "--hosts",
        type=_positive_int,
        default=1,
        metavar="N",
        help="hosts running this app against the same database servers (default 1): the "
        "connection budget is hosts x workers x (pool_size + max_overflow)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON document")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="full stacks and the app's own output"
    )
    parser.add_argument(
        "--color",
        "--colour",
        choices=("auto", "always", "never"),
        default="auto",
        help="colours in the report (auto: only on a terminal, and not with NO_COLOR)",
    )
    parser.add_argument(
        "--timeout", type=_positive_float, default=60.0, metavar="S", help="import time limit"
    )
    parser.add_argument("--chdir", metavar="DIR", help="import from DIR (like gunicorn --chdir)")
    parser.add_argument(
        "--pythonpath",
        action="append",
        default=[],
        metavar="DIR",
        help="prepend DIR to sys.path (repeatable)",
    )
    parser.add_argument("--python", metavar="EXE", help="interpreter to import with")
    return parser


def _positive(convert: Callable[[str], _N], noun: str, bound: str) -> Callable[[str], _N]:
    """An argparse type: ``convert`` the text, which must be more than 0."""

    def parse(text: str) -> _N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be {bound}")
        return value

    return parse


_positive_int = _positive(int, "a whole number", "at least 1")
_positive_float = _positive(float, "a number", "more than 0")


def _is_gunicorn_config(path: str) -> bool:
    name = os.path.basename(path)
    return name.endswith(".conf.py") or (name.startswith("gunicorn") and name.endswith(".py"))


# What a server's config file is called in the messages.
_CONFIG_NAMES = {"uwsgi": "uWSGI ini", "gunicorn": "gunicorn config"}


def build_spec(args: argparse.Namespace) -> Spec:
    """Check the command line and decide how to load the target; raises UsageError."""
    base = os.path.abspath(args.chdir) if args.chdir else os.getcwd()
    if args.chdir and not os.path.isdir(base):
        raise UsageError(f"--chdir {args.chdir}: no such directory")
    server, config, target = _what_to_load(args)
    if server is not None and config is not None:
        full = os.path.join(base, config)
        if not os.path.isfile(full):
            where = f" in {base}" if args.chdir else ""
            raise UsageError(f"{_CONFIG_NAMES[server]} {config!r} not found{where}")
        if target is not None:
            _check_target(target, base)
        return Spec(
            server, target=target, config=full, chdir=args.chdir, pythonpath=args.pythonpath
        )
    assert target is not None  # _what_to_load
    kind = _check_target(target, base)
    if kind == "path":
        target = os.path.join(base, target)
    return Spec(kind, target=target, chdir=args.chdir, pythonpath=args.pythonpath)


def _what_to_load(args: argparse.Namespace) -> tuple[str | None, str | None, str | None]:
    """(server, its config file, target): the server is None for a bare module or file."""
    target = args.target
    if args.config and args.uwsgi:
        raise UsageError("give either -c (gunicorn) or --uwsgi, not both")
    if args.uwsgi:
        if target:
            raise UsageError(
                f"with --uwsgi the app comes from the ini's `module`/`wsgi-file`; drop {target!r}"
            )
        return "uwsgi", args.uwsgi, None
    if args.config:
        return "gunicorn", args.config, target
    if not target:
        raise UsageError("no target: give module:app, a .py file, -c gunicorn.conf.py or --uwsgi")
    if target.endswith(".ini"):
        return "uwsgi", target, None
    if target.endswith(".py") and _is_gunicorn_config(target):
        return "gunicorn", target, None
    return None, None, target


def _check_target(target: str, base: str) -> str:
    module, _, attr = target.partition(":")
    if module.endswith(".py") or os.sep in module:
        if not os.path.isfile(os.path.join(base, module)):
            raise UsageError(f"file {module!r} not found")
        if attr:
            raise UsageError(f"{target!r}: give a file or module:app, not file.py:app")
        return "path"
    if not _MODULE_RE.match(module):
        raise UsageError(f"{target!r} is not a module name, module:app or a path to a .py file")
    if ":" in target and not attr:
        raise UsageError(f"{target!r}: nothing after ':' (expected module:app)")
    return "module"


def _use_colour(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return sys.stdout.isatty()


def _fail(message: str) -> int:
    print(f"forkguard doctor: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def main(argv: list[str]) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        spec = build_spec(args)
    except UsageError as exc:
        return _fail(f"{exc} (see forkguard doctor --help)")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    try:
        run = run_probe(spec, timeout=args.timeout, python=args.python)
    except ProbeError as exc:
        return _fail(str(exc))
    diagnosis = analyze(run.facts, args.workers, args.hosts)
    label = spec.describe()
    if args.verbose and (run.stdout.strip() or run.stderr.strip()):
        print("--- output of the import ---", file=sys.stderr)
        print((run.stdout + run.stderr).rstrip(), file=sys.stderr)
        print("---", file=sys.stderr)
    error = run.facts.get("import_error")
    if args.json:
        print(render_json(diagnosis, label, verbose=args.verbose))
        if error:
            print(
                f"forkguard doctor: could not import {label}: {error['type']}: {error['message']}",
                file=sys.stderr,
            )
        return diagnosis.exit_code
    if error:
        print(f"forkguard doctor: could not import {label}", file=sys.stderr)
        print(format_import_error(error, args.verbose), file=sys.stderr)
        if not args.verbose and not error.get("target_error"):
            print("(run with --verbose for the full traceback)", file=sys.stderr)
        return diagnosis.exit_code
    print(render_text(diagnosis, label, colour=_use_colour(args.color), verbose=args.verbose))
    return diagnosis.exit_code
