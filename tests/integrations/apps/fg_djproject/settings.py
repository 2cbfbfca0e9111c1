"""Settings for the Django fixture project, from the environment.

FG_DJ_VENDOR  mysql (mysqlclient) | postgresql (psycopg 3)
FG_GUARD      1: ``INSTALLED_APPS += ["forkguard.django"]``
FG_DJ_MAX_AGE CONN_MAX_AGE: "none" (persistent, the default here) or seconds
FG_DJ_HEALTH  1: CONN_HEALTH_CHECKS
FG_DJ_TABLE   the table the view writes to
"""

import os

VENDOR = os.environ.get("FG_DJ_VENDOR", "mysql")
_max_age = os.environ.get("FG_DJ_MAX_AGE", "none")

SECRET_KEY = "forkguard-integration-test"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["fg_djproject.fgapp"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "fg_djproject.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DATABASES = {
    "default": {
        "ENGINE": f"django.db.backends.{VENDOR}",
        "NAME": "test",
        "USER": "root",
        "HOST": "127.0.0.1",
        "PORT": "3306" if VENDOR == "mysql" else "5432",
        "CONN_MAX_AGE": None if _max_age == "none" else int(_max_age),
        "CONN_HEALTH_CHECKS": os.environ.get("FG_DJ_HEALTH") == "1",
    }
}
FG_TABLE = os.environ.get("FG_DJ_TABLE", "fg_i5_django")

if os.environ.get("FG_GUARD") == "1":
    INSTALLED_APPS += ["forkguard.django"]  # the one line this integration asks for

LOGGING = {
    "version": 1,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django": {"handlers": ["stderr"], "level": "ERROR"},
        "forkguard": {"handlers": ["stderr"], "level": "INFO"},
    },
}
