"""djsite's settings with the doctor's fix: forkguard.django added to INSTALLED_APPS (after the
app whose ready() queries, so the connection exists before forkguard does)."""

from .settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "forkguard.django"]  # noqa: F405
