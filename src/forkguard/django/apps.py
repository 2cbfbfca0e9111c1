"""``INSTALLED_APPS = [..., "forkguard.django"]``: forkguard for Django and SQLAlchemy alike."""

from __future__ import annotations

from django.apps import AppConfig


class ForkguardConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    name = "forkguard.django"
    label = "forkguard"
    verbose_name = "forkguard"
    default = True

    def ready(self) -> None:
        from . import install

        install()  # SQLAlchemy engines too; FORKGUARD_MODE / FORKGUARD_TRACE apply
