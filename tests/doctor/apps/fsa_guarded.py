"""The reported app with the fix: forkguard.install() before the engine is made."""

import forkguard

forkguard.install()

from flask import Flask  # noqa: E402
from flask_sqlalchemy import SQLAlchemy  # noqa: E402

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = "mysql+pymysql://root@127.0.0.1:3306/test"
db = SQLAlchemy(app)


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "fg_doc_users"
    id = db.Column(db.Integer, primary_key=True)


with app.app_context():
    db.create_all()  # FG-MARK: create_all
