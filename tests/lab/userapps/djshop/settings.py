"""Settings from the environment (the lab fills in a fresh database per cell)."""

from __future__ import annotations

import os

SECRET_KEY = "forkguard-lab-test-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "djshop.urls"
INSTALLED_APPS = ["djshop.apps.ShopConfig"]
MIDDLEWARE: list[str] = []
USE_TZ = True
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["DJSHOP_DB_NAME"],
        "HOST": os.environ["DJSHOP_DB_HOST"],
        "PORT": os.environ["DJSHOP_DB_PORT"],
        "USER": os.environ["DJSHOP_DB_USER"],
        # Persistent connections, as production settings usually have them. (With the default
        # 0, Django closes the inherited connection at each worker's first request - sending
        # PostgreSQL's Terminate on the socket the master and every worker share.)
        "CONN_MAX_AGE": 600,
    }
}
