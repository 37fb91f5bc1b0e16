"""SQLite metadata: one database file in the data folder, one connection per request (flaskr)."""

from __future__ import annotations

import os
import secrets
import sqlite3
from contextlib import closing
from pathlib import Path

from flask import Flask, current_app, g

DB_FILE = "gallery.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    uploaded_bytes INTEGER NOT NULL,
    latent_bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    method TEXT NOT NULL,
    delete_key_hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with the rollback journal,
    so the data folder holds only the database file between transactions."""
    connection = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=DELETE")
    connection.execute("PRAGMA synchronous=FULL")
    return connection


def db_path(app: Flask) -> Path:
    """The database file of an app."""
    return Path(app.config["DATA"]) / DB_FILE


def get_db() -> sqlite3.Connection:
    """This request's connection, opened on first use."""
    if "db" not in g:
        g.db = connect(db_path(current_app))
    return g.db


def close_db(_exc: BaseException | None = None) -> None:
    """Close this request's connection, if one was opened."""
    connection = g.pop("db", None)
    if connection is not None:
        connection.close()


def init_app(app: Flask) -> None:
    """Create the schema (file mode 0600), and close connections at the end of each request."""
    path = db_path(app)
    with closing(connect(path)) as connection:
        connection.executescript(SCHEMA)
    os.chmod(path, 0o600)
    app.teardown_appcontext(close_db)


def persistent_secret_key(app: Flask) -> str:
    """The session key kept in the database, created on first use (first writer wins)."""
    with closing(connect(db_path(app))) as connection:
        connection.execute(
            "INSERT OR IGNORE INTO settings (name, value) VALUES ('secret_key', ?)",
            (secrets.token_urlsafe(32),),
        )
        row = connection.execute("SELECT value FROM settings WHERE name = 'secret_key'").fetchone()
    return row["value"]
