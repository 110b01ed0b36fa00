"""Checks of an MLflow store before anything is written: a server that does not answer, a web server
that is not MLflow's, or a tracking URI of an unknown kind is one ``ConfigError``."""

from __future__ import annotations

from urllib.parse import urlparse

from focustune.errors import ConfigError
from focustune.network import reachable


def check_tracking_uri(uri: str) -> None:
    """Refuse an MLflow server that does not answer, a web server that is not MLflow's, or a tracking
    URI of an unknown kind."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        if not reachable(parsed.hostname or "", port):
            raise ConfigError(f"--tracking-uri {uri}: no MLflow server answers there")
        if (answer := _health(uri)) is not None:
            raise ConfigError(f"--tracking-uri {uri}: a server answers but is not an MLflow tracking server "
                              f"(GET /health: {answer}); check the host, port and path")
    elif parsed.scheme not in ("sqlite", "file", "") and not uri.startswith(("postgresql", "mysql", "databricks")):
        raise ConfigError(f"--tracking-uri {uri}: unsupported scheme {parsed.scheme!r}")


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
