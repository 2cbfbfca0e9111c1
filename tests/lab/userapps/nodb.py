"""A user's app with no database, for the lab's checks of its own input (a URL that 404s)."""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return "hello"
