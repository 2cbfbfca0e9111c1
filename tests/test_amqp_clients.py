"""AMQP connections opened before a fork, against the local RabbitMQ: pika's
``BlockingConnection`` and kombu over py-amqp (Celery's RabbitMQ transport).

An AMQP connection cannot be silently replaced in a child (its channels and unconfirmed
publishes exist only on the broker's side of it), so with forkguard a child's use raises
InheritedConnectionError, nothing it does reaches the broker, and the parent's connection keeps
working. The twins show what a child does to the parent without forkguard: closing its copy of
the connection (pika: a Connection.Close frame; py-amqp's ``collect()``: ``shutdown()`` of the
shared socket) closes the parent's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import forkguard
from forkguard import InheritedConnectionError
from forkguard.pika import impl_and_socket
from tests.forking import start_child

pika = pytest.importorskip("pika")
kombu = pytest.importorskip("kombu")

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _pika_params() -> Any:
    return pika.ConnectionParameters(host="127.0.0.1", port=5672, connection_attempts=1)


@pytest.fixture
def queue() -> Iterator[str]:
    """A fresh ``fg_`` queue on the local RabbitMQ, deleted afterwards."""
    name = f"fg_amqp_{uuid.uuid4().hex[:10]}"
    try:
        conn = pika.BlockingConnection(_pika_params())
    except pika.exceptions.AMQPConnectionError as exc:
        pytest.skip(f"no RabbitMQ on 127.0.0.1:5672: {exc}")
    conn.channel().queue_declare(name)
    conn.close()
    yield name
    conn = pika.BlockingConnection(_pika_params())
    conn.channel().queue_delete(name)
    conn.close()


def _drain(queue: str) -> list[bytes]:
    conn = pika.BlockingConnection(_pika_params())
    try:
        channel, bodies = conn.channel(), []
        while True:
            _, _, body = channel.basic_get(queue, auto_ack=True)
            if body is None:
                return bodies
            bodies.append(body)
    finally:
        conn.close()


def _raises_inherited(fn: Any) -> str:
    try:
        fn()
    except InheritedConnectionError as exc:
        return str(exc)
    raise AssertionError("no InheritedConnectionError")


# ---- pika --------------------------------------------------------------------------------------


def test_pika_child_use_raises_and_the_parent_keeps_its_connection(queue: str) -> None:
    forkguard.install()
    conn = pika.BlockingConnection(_pika_params())
    channel = conn.channel()
    channel.confirm_delivery()

    def child() -> dict[str, Any]:
        message = _raises_inherited(lambda: channel.basic_publish("", queue, b"child-on-inherited"))
        _raises_inherited(lambda: conn.channel())
        closed = (conn.is_open, conn.is_closed)
        conn.close()  # nothing to close here: a no-op, not a frame on the parent's socket
        own = pika.BlockingConnection(_pika_params())  # the child's own works
        own.channel().basic_publish("", queue, b"child-own")
        own.close()
        return {"message": message, "closed": closed, "stats": forkguard.stats()}

    try:
        result = start_child(child, "os", timeout=60)()
        assert result["ok"], result
        value = result["value"]
        assert "pika connection" in value["message"] and "test_amqp_clients.py" in value["message"]
        assert value["closed"] == [False, True]
        assert value["stats"]["connections_neutralized"] >= 1
        channel.basic_publish("", queue, b"parent")  # confirmed: the connection is healthy
        assert sorted(_drain(queue)) == [b"child-own", b"parent"]
    finally:
        conn.close()


def test_pika_unprotected_child_close_closes_the_parents_connection(queue: str) -> None:
    """The twin: a child closing its copy (as a worker's cleanup does) sends Connection.Close
    on the shared socket, and takes the socket out of the epoll instance both processes share
    (pika's ioloop made it before the fork): the parent's connection is broken."""
    conn = pika.BlockingConnection(_pika_params())
    _, sock = impl_and_socket(conn)
    channel = conn.channel()
    channel.confirm_delivery()
    try:
        result = start_child(lambda: conn.close(), "os", timeout=60)()
        assert result["ok"], result
        with pytest.raises((pika.exceptions.AMQPError, OSError)):
            channel.basic_publish("", queue, b"parent")
            conn.process_data_events(time_limit=1)
    finally:
        sock.close()  # pika cannot close a connection in that state; no test may inherit it


def test_pika_private_accessors() -> None:
    """forkguard.pika reaches the impl and the socket through pika's private attributes;
    this fails if pika moves them."""
    try:
        conn = pika.BlockingConnection(_pika_params())
    except pika.exceptions.AMQPConnectionError as exc:
        pytest.skip(f"no RabbitMQ on 127.0.0.1:5672: {exc}")
    try:
        impl, sock = impl_and_socket(conn)
        assert isinstance(impl, pika.SelectConnection)
        assert sock is not None and sock.getpeername()[1] == 5672
    finally:
        conn.close()


# ---- kombu over py-amqp ------------------------------------------------------------------------


def _kombu_connection() -> Any:
    conn = kombu.Connection(AMQP_URL, connect_timeout=5)
    conn.connect()
    return conn


def test_kombu_child_use_raises_and_kombu_reconnects_on_its_own(queue: str) -> None:
    forkguard.install()
    conn = _kombu_connection()
    producer = conn.Producer()
    # Published once at import: the producer's channel is bound to this connection now.
    producer.publish(b"parent-at-import", routing_key=queue, retry=False)

    def child() -> dict[str, Any]:
        message = _raises_inherited(
            lambda: producer.publish(b"child-on-inherited", routing_key=queue, retry=False)
        )
        connected = conn.connected  # kombu asks py-amqp: no, so it will not use it
        conn.collect()  # what Celery's pool does after a fork: nothing reaches the parent's
        with kombu.Connection(AMQP_URL, connect_timeout=5) as own:
            own.Producer().publish(b"child-own", routing_key=queue, retry=False)
        return {"message": message, "connected": connected}

    try:
        result = start_child(child, "os", timeout=60)()
        assert result["ok"], result
        assert "amqp connection" in result["value"]["message"]
        assert result["value"]["connected"] is False
        producer.publish(b"parent", routing_key=queue, retry=False)
        assert conn.connected
        assert sorted(_drain(queue)) == [b"child-own", b"parent", b"parent-at-import"]
    finally:
        conn.release()


def test_kombu_unprotected_child_collect_breaks_the_parents_connection(queue: str) -> None:
    """The twin: py-amqp's collect() in a child shuts the shared socket down."""
    conn = _kombu_connection()
    sock = conn.connection.transport.sock
    producer = conn.Producer()
    try:
        result = start_child(lambda: conn.collect(), "os", timeout=60)()
        assert result["ok"], result
        with pytest.raises(Exception) as failure:
            producer.publish(b"parent", routing_key=queue, retry=False)
            conn.drain_events(timeout=1)
        assert not isinstance(failure.value, InheritedConnectionError)
    finally:
        sock.close()  # the shut-down socket: no test may inherit it
        conn.collect()
