"""The forkguard wheel holds the library and nothing else.

Users put this wheel in production: the lab (a Flask demo app, private database servers), the
benchmarks and their charts live in the separate ``forkguard-lab`` distribution (``lab/``), and
none of their heavy requirements may leak into forkguard's metadata.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIP_WHEEL = (sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation")
TOOL_REQUIREMENTS = ("matplotlib", "uwsgi", "gunicorn", "forkguard-lab", "forkguard_lab")


def _build(project: Path, out: Path) -> Path:
    subprocess.run(
        [*PIP_WHEEL, "-w", str(out), str(project)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    return zipfile.ZipFile(_build(ROOT, tmp_path_factory.mktemp("wheel")))


def test_wheel_holds_only_the_library(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    code = [n for n in names if not n.startswith("forkguard-0")]  # the .dist-info directory
    assert code and all(n.startswith("forkguard/") for n in code), code
    for tool in ("forkguard/lab/", "forkguard/bench/", "forkguard_lab/"):
        assert not any(n.startswith(tool) for n in names), tool
    assert not any(n.endswith((".png", ".ini")) for n in names)
    assert "forkguard/doctor/cli.py" in names and "forkguard/pytest_plugin.py" in names


def test_wheel_requires_no_tool(wheel: zipfile.ZipFile) -> None:
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    requires = [
        line.split(":", 1)[1].strip().lower()
        for line in wheel.read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    assert requires, "the extras' requirements are expected in the metadata"
    assert not [r for r in requires if "extra ==" not in r], "forkguard has no required deps"
    leaked = [r for r in requires if r.startswith(TOOL_REQUIREMENTS)]
    assert not leaked, leaked


def test_lab_wheel_carries_the_tools_and_their_commands(tmp_path: Path) -> None:
    lab = zipfile.ZipFile(_build(ROOT / "lab", tmp_path))
    names = lab.namelist()
    assert "forkguard_lab/app.py" in names and "forkguard_lab/bench/cli.py" in names
    assert not any(n.startswith("forkguard/") for n in names)
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = lab.read(entry_points).decode()
    assert "[forkguard.commands]" in text and "lab = forkguard_lab.cli:main" in text


def test_core_never_names_the_tools() -> None:
    """Imports run one way: nothing in the library imports or names the lab or the benchmarks."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "src" / "forkguard").rglob("*.py")
        if "forkguard_lab" in path.read_text() or "forkguard.lab" in path.read_text()
    ]
    assert not offenders, offenders
