"""The reported app: Flask-SQLAlchemy, create_all() at import, MariaDB through PyMySQL."""

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = "mysql+pymysql://root@127.0.0.1:3306/test"
db = SQLAlchemy(app, session_options={"expire_on_commit": False})


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "fg_doc_users"
    id = db.Column(db.Integer, primary_key=True)
    email = db.Column(db.String(120), unique=True)


def configure_db() -> None:
    with app.app_context():
        db.create_all()  # FG-MARK: create_all


configure_db()


@app.route("/")
def index() -> str:
    return str(db.session.query(User).count())
