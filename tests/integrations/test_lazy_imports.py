"""Optional integrations stay optional: ``import forkguard`` and ``forkguard.install()`` import
neither Django nor Celery (nor an asyncio driver) by themselves."""

from __future__ import annotations

import subprocess
import sys


def test_import_forkguard_does_not_import_django_or_celery() -> None:
    code = (
        "import sys, forkguard; forkguard.install(); "
        "bad = [m for m in ('django', 'celery', 'asyncpg', 'aiomysql') if m in sys.modules]; "
        "print(bad); "
        "sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
