"""The seed verbatim in spirit: uwsgidecorators' postfork hook disposing the engine."""

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
