"""A clean app: engines are made at import but nothing connects until a request."""

from flask import Flask
from sqlalchemy import create_engine, text

mysql = create_engine("mysql+pymysql://root@127.0.0.1:3306/test", pool_pre_ping=True)
pg = create_engine("postgresql+psycopg://root@127.0.0.1:5432/test", pool_recycle=1800)
app = Flask(__name__)


@app.route("/")
def index() -> str:
    with mysql.connect() as conn:
        return str(conn.execute(text("SELECT 1")).scalar())
