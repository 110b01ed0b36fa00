"""Checks of a store before anything is written: an MLflow server that does not answer, a web server
that is not MLflow's, a database that does not answer or refuses the credentials, an SQLite file that
cannot be opened, MLflow's file store, or a tracking URI of an unknown kind is one ``ConfigError``."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from focustune.errors import ConfigError
from focustune.network import reachable

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

#: Default ports of the database servers a SQLAlchemy URL may name without one.
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}
#: Seconds a database connection attempt may take before the store counts as not answering.
CONNECT_TIMEOUT_S = 5


def check_tracking_uri(uri: str) -> None:
    """Refuse an MLflow server that does not answer, a web server that is not MLflow's, a database
    that cannot be used, MLflow's file store (refused by MLflow itself unless MLFLOW_ALLOW_FILE_STORE
    is true), or a tracking URI of an unknown kind."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        if not reachable(parsed.hostname or "", port):
            raise ConfigError(f"--tracking-uri {uri}: no MLflow server answers there")
        if (answer := _health(uri)) is not None:
            raise ConfigError(f"--tracking-uri {uri}: a server answers but is not an MLflow tracking server "
                              f"(GET /health: {answer}); check the host, port and path")
    elif parsed.scheme in ("file", "") or len(parsed.scheme) == 1:  # a path (C:\... has a one-letter scheme)
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
            raise ConfigError(f"--tracking-uri {uri}: a folder is MLflow's file store, which MLflow "
                              f"{_mlflow_version()} refuses; use a database (sqlite:///PATH/mlflow.db) or a "
                              "server (http://HOST:PORT)")
    elif parsed.scheme.startswith(("sqlite", "postgresql", "mysql", "mssql")):
        check_database(uri, "--tracking-uri")
    elif parsed.scheme != "databricks":
        raise ConfigError(f"--tracking-uri {uri}: unsupported scheme {parsed.scheme!r}")


def check_database(url: str, option: str) -> None:
    """Refuse a SQLAlchemy URL (given as ``option``) that does not parse, an SQLite file that cannot be
    opened or created, or a database server that does not answer or refuses the connection (a wrong
    password): a short connection attempt, so the problem shows in seconds, before any work."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"{option} {url}: not a database URL (e.g. sqlite:///optuna.db, "
                          "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB)") from None
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite(parsed.database, shown, option)
        return
    port = parsed.port or DATABASE_PORTS.get(parsed.get_backend_name())
    if parsed.host and port and not reachable(parsed.host, port):
        raise ConfigError(f"{option}: no database server answers at {parsed.host}:{port} "
                          "(connection refused or timed out); start it or correct the URL")
    _connect(parsed, shown, option)


def _check_sqlite(database: str | None, shown: str, option: str) -> None:
    """An existing file must be an SQLite database; a new one needs an existing, writable folder."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if path.exists():
        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
                connection.execute("PRAGMA schema_version")
        except sqlite3.Error as exc:
            raise ConfigError(f"{option} {shown}: cannot open {path} as an SQLite database ({exc})") from None
    elif not path.parent.is_dir():
        raise ConfigError(f"{option} {shown}: folder {path.parent} does not exist")
    elif not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {shown}: cannot create {path.name} in {path.parent} (not writable)")


def _connect(parsed: URL, shown: str, option: str) -> None:
    """One connection and ``SELECT 1``, with a timeout; a refusal (a wrong password, an unknown
    database, a missing driver) is one ConfigError naming the URL without its password."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    driver = parsed.get_driver_name()
    timeout = {"connect_timeout": CONNECT_TIMEOUT_S} if driver in ("psycopg", "psycopg2", "pymysql",
                                                                    "mysqldb") else {}
    try:
        engine = create_engine(parsed, poolclass=NullPool, connect_args=timeout)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except ImportError as exc:
        raise ConfigError(f"{option} {shown}: its database driver is not installed ({exc})") from None
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise ConfigError(f"{option} {shown}: the database refused the connection ({reason})") from None


def _mlflow_version() -> str:
    from importlib.metadata import version

    return version("mlflow")


def _health(uri: str) -> str | None:
    """None when ``uri`` answers MLflow's ``/health`` (or asks for credentials, as a guarded server
    does, or its TLS certificate needs MLflow's own CA settings); else what it answered."""
    import ssl
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:
            body = response.read(64).decode(errors="replace").strip()
    except urllib.error.HTTPError as exc:
        return None if exc.code in (401, 403) else f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return None if isinstance(exc.reason, ssl.SSLError) else str(exc.reason)
    except OSError as exc:  # a reset connection, a timeout
        return str(getattr(exc, "reason", exc))
    return None if body == "OK" else f"{body[:40]!r} instead of OK"
