"""Flask-SQLAlchemy 2 style: an app context pushed at import and never popped, a query run in
it, so the scoped session keeps its connection checked out (mysqlclient)."""

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import text

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = "mysql+mysqldb://root@127.0.0.1:3306/test"
db = SQLAlchemy(app)
app.app_context().push()
ANSWER = db.session.execute(text("SELECT 42")).scalar()  # FG-MARK: session query
