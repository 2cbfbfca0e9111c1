"""What the lab app, the fault-suite app and the benchmark app share: the users model, the
routes the load drives (``/echo``, ``/user``) and the one-line error marker.

Each app is built at import the way the reported app was, and each decides that order itself
(forkguard first or not, app context pushed or not); these helpers only register things on the
Flask app and Flask-SQLAlchemy ``db`` handed to them, so calling them does not change what runs
at import. One copy keeps the JSON replies the lab, the benchmarks and the tests parse the same
in all three apps. This module imports only what the apps import already (Flask,
Flask-SQLAlchemy, SQLAlchemy), so the benchmark app's memory is not affected.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Callable, Optional

from flask import Flask, jsonify, request
from flask.logging import default_handler
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import text

from forkguard_lab import ERROR_MARKER

# log_error(where, exc): one line per failed request or hook.
LogError = Callable[[str, BaseException], None]
# How GET /user looks the user up: "query" (User.query), "session" (db.session.query(User)) or
# "flavor" (the request's ?flavor=session picks db.session.query, else User.query).
LOOKUPS = ("query", "session", "flavor")


def marker_logger(app: Flask) -> LogError:
    """Send ``app.logger`` straight to stderr and return the function logging one marker line.

    Stderr is the server's log file; wsgi.errors is not used because errors outside a request
    (post-fork hooks) must land in the same log, and uWSGI's wsgi.errors may be buffered. The
    lab counts DB error kinds from one marker per failure, exact where counting traceback lines
    is not.
    """
    app.logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    app.logger.removeHandler(default_handler)
    app.logger.addHandler(handler)
    app.logger.propagate = False

    def log_error(where: str, exc: BaseException) -> None:
        first = str(exc).splitlines()[0] if str(exc) else ""
        app.logger.error(
            "%s where=%s pid=%d exc=%s: %s",
            ERROR_MARKER,
            where,
            os.getpid(),
            type(exc).__name__,
            first[:300],
        )

    return log_error


def user_model(db: SQLAlchemy, table: str, log_error: LogError) -> Any:
    """The reported app's ``User`` model on ``table``, with its ``save()``.

    ``save()`` commits, or logs with ``log_error`` and rolls back; True if the commit returned.
    """

    class User(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = table
        id = db.Column(db.Integer, primary_key=True)
        email = db.Column(db.String(190), unique=True, nullable=False)
        name = db.Column(db.String(100), nullable=False, default="")

        def save(self) -> bool:
            """The reported app's save(): commit, or log and roll back."""
            try:
                db.session.add(self)
                db.session.commit()
            except Exception as ex:
                log_error("save", ex)
                db.session.rollback()
                return False
            return True

    return User


def add_error_marker(
    app: Flask, log_error: LogError, after: Optional[Callable[[], None]] = None
) -> None:
    """On any exception in a view: one marker line, ``after()`` if given, then a JSON 500.

    The reported app has no handler; Flask's default logs a multi-line traceback instead, which
    the lab could not count as exactly.
    """

    @app.errorhandler(Exception)
    def _on_error(exc: Exception) -> Any:
        log_error(request.path, exc)
        if after is not None:
            after()
        return jsonify(error=type(exc).__name__, pid=os.getpid()), 500


def hold(most: float) -> None:
    """Sleep for the request's ``?hold=`` seconds, at most ``most``: keeps a worker busy."""
    seconds = float(request.args.get("hold", "0") or 0)
    if seconds > 0:
        time.sleep(min(seconds, most))


class CrossedReply(Exception):
    """The HTTP API answered another request than this process's (a shared keep-alive socket)."""


class RemoteApi:
    """An HTTP API the app calls, through a ``requests.Session`` built at import - and used at
    import, as apps do to fetch a token or a config - so the session's pool holds a keep-alive
    TLS connection when the server forks (the lab's ``--clients`` variant)."""

    def __init__(self, url: str, ca_path: str) -> None:
        import requests

        self.url = url
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the lab's CA
        self.session.verify = ca_path
        self.check("startup")

    def check(self, token: str) -> None:
        """One call; raises unless the reply answers this very request."""
        reply = self.session.get(f"{self.url}/{token}", headers={"X-Echo-Id": token}, timeout=5)
        if not reply.text.startswith(f"{token} "):
            raise CrossedReply(f"sent {token!r}, got the reply to {reply.text[:60]!r}")


def add_user_routes(
    app: Flask,
    db: SQLAlchemy,
    user: Any,
    *,
    lookup: str = "query",
    most_hold: float = 1.0,
    remote: Optional[RemoteApi] = None,
) -> None:
    """``GET /echo``, ``GET /user`` and ``POST /user``, the routes the load drives.

    ``/echo`` sends the client's token through the database and back: any other token in the
    reply means this process read a result meant for another one; with ``remote`` it also
    sends it through the HTTP API (an error, or a reply to another request, fails the request).
    ``POST /user`` answers 200 with the new id only if ``user.save()`` committed.
    """
    if lookup not in LOOKUPS:
        raise ValueError(f"lookup={lookup!r}: expected one of {LOOKUPS}")

    @app.get("/echo")
    def echo() -> Any:
        token = request.args.get("token", "")
        got = db.session.execute(text("SELECT :token"), {"token": token}).scalar()
        if remote is not None:
            remote.check(f"{os.getpid()}-{token}")
        hold(most_hold)
        return jsonify(token=got, pid=os.getpid())

    @app.get("/user")
    def read_user() -> Any:
        email = request.args.get("email", "")
        by_session = lookup == "session" or (
            lookup == "flavor" and request.args.get("flavor") == "session"
        )
        if by_session:
            found = db.session.query(user).filter(user.email == email).scalar()
        else:
            found = user.query.filter(user.email == email).scalar()
        if found is None:
            return jsonify(id=None, email=None, pid=os.getpid())
        return jsonify(id=found.id, email=found.email, pid=os.getpid())

    @app.post("/user")
    def write_user() -> Any:
        email = request.form.get("email", "")
        new = user(email=email, name=email.split("@")[0][:100])
        if not new.save():
            return jsonify(error="save failed", pid=os.getpid()), 500
        return jsonify(id=new.id, email=new.email, pid=os.getpid())
