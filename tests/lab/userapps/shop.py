"""A user's app, as ``forkguard lab --app`` meets it: written without the lab or forkguard.

Plain Flask and SQLAlchemy; at import it creates its table and reads a setting from the
database (a common startup check), so the pool's connection is open in the master when a
pre-fork server forks its workers. The database comes from ``SHOP_DATABASE_URL``.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from flask import Flask, jsonify

engine = sa.create_engine(os.environ["SHOP_DATABASE_URL"])
items = sa.Table(
    "shop_items",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50), nullable=False),
)
with engine.begin() as conn:  # at import: the connection stays in the pool, open
    items.create(conn, checkfirst=True)
    if conn.execute(sa.select(sa.func.count()).select_from(items)).scalar() == 0:
        conn.execute(items.insert(), [{"id": n, "name": f"item {n}"} for n in range(1, 11)])

app = Flask(__name__)


@app.get("/items/<int:item_id>")
def item(item_id: int) -> object:
    with engine.connect() as conn:
        name = conn.execute(sa.select(items.c.name).where(items.c.id == item_id)).scalar()
    return jsonify(id=item_id, name=name)


@app.get("/count")
def count() -> object:
    with engine.connect() as conn:
        return jsonify(count=conn.execute(sa.select(sa.func.count()).select_from(items)).scalar())
