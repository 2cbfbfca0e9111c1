"""Run the probe in a fresh interpreter, as a pre-fork master would start, and read its facts."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger("forkguard.doctor")


class ProbeError(Exception):
    """The probe could not run at all (not an import error in the user's code)."""


@dataclass
class Spec:
    """What to import: ``kind`` is ``module`` (``module`` or ``module:app``), ``path`` (a .py
    file), ``gunicorn`` (``config`` plus an optional ``target``) or ``uwsgi`` (``config``)."""

    kind: str
    target: str | None = None
    config: str | None = None
    chdir: str | None = None
    pythonpath: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.kind == "gunicorn":
            return f"gunicorn -c {self.config}" + (f" {self.target}" if self.target else "")
        if self.kind == "uwsgi":
            return f"uwsgi --ini {self.config}"
        return str(self.target)


@dataclass
class ProbeRun:
    facts: dict[str, Any]
    stdout: str
    stderr: str


def run_probe(
    spec: Spec,
    *,
    timeout: float = 60.0,
    python: str | None = None,
    env: dict[str, str] | None = None,
) -> ProbeRun:
    """Import ``spec`` in a subprocess; raises :class:`ProbeError` if that process fails."""
    cwd = os.path.abspath(spec.chdir) if spec.chdir else os.getcwd()
    child_env = _child_env(env, python)
    with tempfile.TemporaryDirectory(prefix="forkguard-doctor-") as tmp:
        out = os.path.join(tmp, "facts.json")
        spec_json = json.dumps(asdict(spec))
        cmd = [python or sys.executable, "-m", "forkguard.doctor.probe", "--spec", spec_json]
        cmd += ["--out", out]
        try:
            proc = subprocess.run(
                cmd,
                cwd=cwd,
                env=child_env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise ProbeError(
                f"importing {spec.describe()} did not finish within {timeout:g} s "
                "(is it waiting for a server, or serving requests at import?); "
                "raise the limit with --timeout"
            ) from exc
        except OSError as exc:
            raise ProbeError(f"cannot start {cmd[0]}: {exc}") from exc
        if not os.path.exists(out):
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise ProbeError(
                f"the import process exited with status {proc.returncode} before reporting "
                f"(the app may call os._exit() or crash the interpreter at import)"
                + (f":\n{tail}" if tail else "")
            )
        with open(out, encoding="utf-8") as fh:
            facts: dict[str, Any] = json.load(fh)
    log.debug("forkguard doctor: probe for %s done: %s", spec.describe(), proc.returncode)
    return ProbeRun(facts=facts, stdout=proc.stdout, stderr=proc.stderr)


def _child_env(env: dict[str, str] | None, python: str | None) -> dict[str, str]:
    """The probe's environment: forkguard findable from ``python``, no FORKGUARD_MODE."""
    child_env = dict(os.environ if env is None else env)
    if python is not None:
        # Another interpreter (the app's own venv) must still find this forkguard.
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (here, child_env.get("PYTHONPATH", "")) if p
        )
    child_env.pop("FORKGUARD_MODE", None)
    return child_env
