"""pytest plugin: fail the test session if importing the app leaves a database connection open.

Enable it with ``pytest -p forkguard.pytest_plugin`` (or the ``forkguard`` pytest11 entry point)
and name the app the way ``forkguard doctor`` takes it::

    # pytest.ini / [tool.pytest.ini_options]
    forkguard_app = myproject.wsgi:app          # or: -c gunicorn.conf.py / --uwsgi app.ini
    forkguard_fail_on = connections             # connections (default) | errors | warnings

or on the command line: ``pytest --forkguard-app myproject.wsgi:app``. The app is imported in a
separate process at session start (as a pre-fork master would), so the test process itself is
untouched; the findings are printed in the terminal summary and the session fails if any match
``forkguard_fail_on``. Without a configured app the plugin does nothing.
"""

from __future__ import annotations

import logging
import shlex
from typing import Any, Callable

import pytest

log = logging.getLogger("forkguard.doctor")

# forkguard_fail_on -> which findings fail the session.
_FAILS: dict[str, Callable[[Any], bool]] = {
    "connections": lambda finding: finding.kind == "inherited-connection",
    "errors": lambda finding: finding.severity == "error",
    "warnings": lambda finding: finding.severity in ("error", "warning"),
}
_FAIL_ON = tuple(_FAILS)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("forkguard", "forkguard doctor: connections left open at import")
    group.addoption(
        "--forkguard-app",
        action="store",
        default=None,
        metavar="TARGET",
        help="app to check, as for `forkguard doctor` (module:app, file.py, "
        "'-c gunicorn.conf.py', '--uwsgi app.ini'); overrides the forkguard_app ini option",
    )
    group.addoption(
        "--forkguard-fail-on",
        action="store",
        default=None,
        choices=_FAIL_ON,
        help="what fails the session: connections (default), errors or warnings",
    )
    parser.addini("forkguard_app", "app for forkguard doctor to import at session start")
    parser.addini(
        "forkguard_fail_on", "connections (default) | errors | warnings", default="connections"
    )
    parser.addini("forkguard_workers", "worker count for the pool checks", default="")


class _Result:
    def __init__(self, target: str) -> None:
        self.target = target
        self.report = ""
        self.failures: list[str] = []
        self.error: str | None = None
        self.diagnosis: Any = None


_KEY = pytest.StashKey[_Result]()


def _target(config: pytest.Config) -> str | None:
    value = config.getoption("--forkguard-app") or config.getini("forkguard_app")
    return str(value).strip() or None


def _fail_on(config: pytest.Config) -> str:
    value = config.getoption("--forkguard-fail-on") or config.getini("forkguard_fail_on")
    value = str(value).strip() or "connections"
    if value not in _FAIL_ON:
        raise pytest.UsageError(f"forkguard_fail_on = {value!r}: use one of {', '.join(_FAIL_ON)}")
    return value


def _run(config: pytest.Config, target: str) -> _Result:
    from .doctor.cli import UsageError, _parser, build_spec
    from .doctor.findings import analyze
    from .doctor.report import format_import_error, render_text
    from .doctor.runner import ProbeError, run_probe

    result = _Result(target)
    argv = shlex.split(target)
    workers_ini = str(config.getini("forkguard_workers")).strip()
    if workers_ini:
        argv += ["--workers", workers_ini]
    try:
        args = _parser().parse_args(argv)
        spec = build_spec(args)
    except UsageError as exc:
        raise pytest.UsageError(f"forkguard_app = {target!r}: {exc}") from exc
    try:
        run = run_probe(spec, timeout=args.timeout)
    except ProbeError as exc:
        result.error = str(exc)
        return result
    error = run.facts.get("import_error")
    if error:
        result.error = "could not import the app: " + format_import_error(error, False)
        return result
    diagnosis = analyze(run.facts, args.workers)
    result.diagnosis = diagnosis
    result.report = render_text(diagnosis, spec.describe(), colour=False, verbose=False)
    fails = _FAILS[_fail_on(config)]
    for finding in diagnosis.findings:
        if fails(finding):
            where = f" (at {finding.location})" if finding.location else ""
            result.failures.append(f"{finding.title}{where}")
    return result


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput"):  # an xdist worker: the controller checks once
        return
    target = _target(config)
    if target is None:
        return
    _fail_on(config)
    config.stash[_KEY] = _run(config, target)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    result = config.stash.get(_KEY, None)
    if result is None:
        return
    tr = terminalreporter
    if result.error is not None:
        tr.section("forkguard doctor", sep="=", red=True, bold=True)
        tr.write_line(f"{result.target}: {result.error}")
        return
    if result.failures:
        tr.section("forkguard doctor", sep="=", red=True, bold=True)
        tr.write_line(result.report)
        tr.write_line("")
        tr.write_line(
            f"forkguard: FAILED: importing {result.target} leaves what every pre-fork worker "
            "would inherit:"
        )
        for line in result.failures:
            tr.write_line(f"  - {line}")
    elif config.getoption("verbose") > 0:
        tr.section("forkguard doctor", sep="=", green=True)
        tr.write_line(result.report)
    else:
        tr.write_line(f"forkguard doctor: {result.target}: nothing left open at import")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    result = session.config.stash.get(_KEY, None)
    if result is None:
        return
    if (result.failures or result.error is not None) and session.exitstatus in (
        pytest.ExitCode.OK,
        pytest.ExitCode.NO_TESTS_COLLECTED,
    ):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def doctor_result(config: pytest.Config) -> Any:
    """The session's :class:`~forkguard.doctor.findings.Diagnosis` (None if not run/failed)."""
    result = config.stash.get(_KEY, None)
    return result.diagnosis if result is not None else None


__all__ = ["doctor_result"]
