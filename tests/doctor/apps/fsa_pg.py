"""Flask-SQLAlchemy, create_all() at import, PostgreSQL through psycopg2."""

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg2://root@127.0.0.1:5432/test"
db = SQLAlchemy(app)


class Item(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "fg_doc_items"
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(50))


with app.app_context():
    db.create_all()  # FG-MARK: create_all
