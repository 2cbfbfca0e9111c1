"""Network clients built and used at import: an HTTP session (requests), an httpx client, a
pika connection to RabbitMQ and a Redis client. FG_ECHO_URL / FG_ECHO_CA: a private HTTPS
server the test started. FG_GUARD=1 installs forkguard first."""

import os

if os.environ.get("FG_GUARD") == "1":
    import forkguard

    forkguard.install()

import httpx
import pika
import redis
import requests

session = requests.Session()
session.trust_env = False
session.verify = os.environ["FG_ECHO_CA"]
session.get(os.environ["FG_ECHO_URL"] + "/doctor", timeout=10)  # FG-MARK: requests
client = httpx.Client(verify=os.environ["FG_ECHO_CA"], timeout=10)
client.get(os.environ["FG_ECHO_URL"] + "/doctor")  # FG-MARK: httpx
broker = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))  # FG-MARK: pika
cache = redis.Redis(host="127.0.0.1")
cache.ping()  # FG-MARK: redis


def application(environ: object, start_response: object) -> list[bytes]:
    return [b"ok"]
