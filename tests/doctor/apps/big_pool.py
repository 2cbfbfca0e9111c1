"""No connection at import, but a pool too big for the server and no recycle."""

from sqlalchemy import create_engine

engine = create_engine(  # FG-MARK: engine
    "mysql+pymysql://root@127.0.0.1:3306/test", pool_size=30, max_overflow=20
)


def application(environ: object, start_response: object) -> list[bytes]:
    return [b"ok"]
