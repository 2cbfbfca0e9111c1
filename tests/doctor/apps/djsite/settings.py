"""A minimal Django settings module (PostgreSQL through psycopg 3)."""

SECRET_KEY = "forkguard-doctor-test"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["djsite"]
ROOT_URLCONF = "djsite.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "test",
        "USER": "root",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "CONN_MAX_AGE": 0,
    }
}
