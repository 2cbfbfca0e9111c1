"""Deployment settings for the project ``wagtail start mysite`` makes, for ``forkguard lab --app``.

The template's ``mysite/settings/production.py`` ends with ``from .local import *``: this file
is linked there as ``mysite/settings/local.py``, the template's own place for a deployment's
settings. It sets only what a deployment must: the secret key, the allowed hosts and, when
``WAGTAIL_DB_BACKEND`` is set, the database - one the lab makes afresh for each cell and passes
piece by piece (``--env WAGTAIL_DB_NAME={postgresql.name}`` and the like). Without it (as for
``collectstatic`` when the venv is built) the template's SQLite database stays.
"""

from __future__ import annotations

import os

SECRET_KEY = "forkguard-lab-throwaway-secret"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

_ENGINES = {"mysql": "django.db.backends.mysql", "postgresql": "django.db.backends.postgresql"}

if os.environ.get("WAGTAIL_DB_BACKEND"):
    DATABASES = {
        "default": {
            "ENGINE": _ENGINES[os.environ["WAGTAIL_DB_BACKEND"]],
            "NAME": os.environ["WAGTAIL_DB_NAME"],
            "HOST": os.environ["WAGTAIL_DB_HOST"],
            "PORT": os.environ["WAGTAIL_DB_PORT"],
            "USER": os.environ["WAGTAIL_DB_USER"],
            "PASSWORD": os.environ.get("WAGTAIL_DB_PASSWORD", ""),
            # The template sets none, so Django's default 0 (a connection per request) holds;
            # a deployment with persistent connections sets e.g. 600 here.
            "CONN_MAX_AGE": int(os.environ.get("WAGTAIL_DB_CONN_MAX_AGE", "0")),
        }
    }
