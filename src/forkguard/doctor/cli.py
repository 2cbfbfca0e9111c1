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
from typing import NoReturn

from .findings import EXIT_ERROR, analyze
from .report import format_import_error, render_json, render_text
from .runner import ProbeError, Spec, run_probe

log = logging.getLogger("forkguard.doctor")

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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def _is_gunicorn_config(path: str) -> bool:
    name = os.path.basename(path)
    return name.endswith(".conf.py") or (name.startswith("gunicorn") and name.endswith(".py"))


def build_spec(args: argparse.Namespace) -> Spec:
    """Check the command line and decide how to load the target; raises UsageError."""
    base = os.path.abspath(args.chdir) if args.chdir else os.getcwd()
    if args.chdir and not os.path.isdir(base):
        raise UsageError(f"--chdir {args.chdir}: no such directory")

    def existing(path: str, what: str) -> str:
        full = os.path.join(base, path)
        if not os.path.isfile(full):
            raise UsageError(f"{what} {path!r} not found" + (f" in {base}" if args.chdir else ""))
        return full

    target = args.target
    if args.config and args.uwsgi:
        raise UsageError("give either -c (gunicorn) or --uwsgi, not both")
    if args.uwsgi:
        if target:
            raise UsageError(
                f"with --uwsgi the app comes from the ini's `module`/`wsgi-file`; drop {target!r}"
            )
        return Spec(
            "uwsgi",
            config=existing(args.uwsgi, "uWSGI ini"),
            chdir=args.chdir,
            pythonpath=args.pythonpath,
        )
    if args.config:
        config = existing(args.config, "gunicorn config")
        if target is not None:
            _check_target(target, base)
        return Spec(
            "gunicorn", target=target, config=config, chdir=args.chdir, pythonpath=args.pythonpath
        )
    if not target:
        raise UsageError("no target: give module:app, a .py file, -c gunicorn.conf.py or --uwsgi")
    if target.endswith(".ini"):
        return Spec(
            "uwsgi",
            config=existing(target, "uWSGI ini"),
            chdir=args.chdir,
            pythonpath=args.pythonpath,
        )
    if target.endswith(".py") and _is_gunicorn_config(target):
        return Spec(
            "gunicorn",
            config=existing(target, "gunicorn config"),
            chdir=args.chdir,
            pythonpath=args.pythonpath,
        )
    kind = _check_target(target, base)
    if kind == "path":
        target = os.path.join(base, target)
    return Spec(kind, target=target, chdir=args.chdir, pythonpath=args.pythonpath)


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
    diagnosis = analyze(run.facts, args.workers)
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
