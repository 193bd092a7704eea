"""A WSGI application (no poolscope import) whose SQLAlchemy engine is made at import,
in gunicorn's master under --preload, and used by every forked worker, for
`poolscope run -- gunicorn --preload` tests. DSN from $APP_DSN."""

import os

from sqlalchemy import create_engine, text

engine = create_engine(os.environ["APP_DSN"].replace("postgresql://", "postgresql+psycopg://", 1))


def app(environ, start_response):
    with engine.connect() as conn:
        value = conn.execute(text("SELECT 42")).scalar()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(value).encode()]
