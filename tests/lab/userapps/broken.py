"""A user's app that fails at import, as a typo would: the lab must say so and stop."""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)
raise RuntimeError("broken on purpose: the shop's settings module is missing")
