"""What the integration apps share: the Celery configuration of a test worker, and a log handler
that keeps forkguard's records with the pid that wrote them.

Celery is imported only when a worker app is made, so the ``multiprocessing.Pool`` app can use
the handler without it.
"""

from __future__ import annotations

import logging
import os
from typing import Any


def celery_worker_app(name: str) -> Any:
    """The Celery app ``name`` for a test worker on its own queue (``FG_QUEUE``), keys under
    ``FG_KEYPREFIX``, broker and results in ``FG_BROKER``.

    Tuned for tests: one task at a time per process, and a child stuck reading a shared socket
    is killed after 3 s, not waited for.
    """
    from celery import Celery

    prefix = {"global_keyprefix": os.environ["FG_KEYPREFIX"]}
    app = Celery(name, broker=os.environ["FG_BROKER"], backend=os.environ["FG_BROKER"])
    app.conf.update(
        task_default_queue=os.environ["FG_QUEUE"],
        broker_transport_options=prefix,
        result_backend_transport_options=prefix,
        result_expires=300,
        task_time_limit=3,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,
        broker_connection_retry_on_startup=True,
    )
    return app


class ForkguardRecords(logging.Handler):
    """forkguard's log records, per process: a forked worker starts with a copy of the list, so
    each record carries its pid and a worker reports only its own."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(
            {"pid": os.getpid(), "level": record.levelname, "message": record.getMessage()}
        )

    def mine(self) -> list[dict[str, Any]]:
        """The records this process wrote."""
        return [r for r in self.seen if r["pid"] == os.getpid()]
