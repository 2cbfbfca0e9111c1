"""The reported app under uWSGI, with the fix its user tried first: a uwsgidecorators postfork
hook that disposes the engine. The doctor still reports the connection create_all() left open
at import: the master holds it when uWSGI forks."""

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from uwsgidecorators import postfork

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = "mysql+pymysql://root@127.0.0.1:3306/test"
db = SQLAlchemy(app, session_options={"expire_on_commit": False})


class Campaign(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "fg_doc_campaigns"
    id = db.Column(db.Integer, primary_key=True)


def configure_db() -> None:
    with app.app_context():
        db.create_all()  # FG-MARK: create_all


configure_db()


@postfork
def reset_db_connections() -> None:
    with app.app_context():
        db.engine.dispose()
