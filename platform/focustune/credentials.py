"""Credentials inside URIs (``--tracking-uri``, ``--optuna-storage``, ``--storage``): shown and stored
only masked, ``user:***@host``; the URI as given stays in this process's memory.

An object that is pickled (into Tune's experiment) keeps a URI masked by :func:`masked` in its state
and gets it back with :func:`revealed`, which knows the URIs this process was given (:func:`remember`).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
#: Query parameters that carry a secret (libpq's ``?password=``, tokens of HTTP stores ...).
SECRET_QUERY_KEYS = re.compile(r"pass(word|wd)?|pwd|secret|token|key", re.IGNORECASE)
#: Environment variables holding a secret key, which must not travel in a Ray runtime environment
#: (Ray's runtime-env agent logs each one it creates).
SECRET_ENV_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

_given: dict[str, str] = {}  # masked URI -> the URI as given to this process


def masked(uri: str) -> str:
    """``uri`` with the password of its user part and the values of secret query parameters replaced
    by ``***`` (``postgresql://user:***@host/db``); anything that is not such a URI as it is."""
    if "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_QUERY_KEYS.fullmatch(k) for k, _ in pairs):
            query = urlencode([(k, MASK if SECRET_QUERY_KEYS.fullmatch(k) else v) for k, v in pairs], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return uri  # as given (rebuilding it would drop an empty host: sqlite:////path)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def remember(*uris: str | None) -> None:
    """Let :func:`revealed` turn the masked form of each of ``uris`` back into it."""
    for uri in uris:
        if uri:
            _given[masked(uri)] = uri


def revealed(uri: str) -> str:
    """The URI this process was given whose masked form is ``uri`` (``uri`` itself when none)."""
    return _given.get(uri, uri)


def stored(uri: str) -> str:
    """``uri`` for a pickled state: masked, and remembered so that this process can reveal it again."""
    remember(uri)
    return masked(uri)


_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"]+")


def masked_text(text: str) -> str:
    """``text`` (a message, an error) with every URI in it :func:`masked`."""
    return _URI_IN_TEXT.sub(lambda found: masked(found.group(0)), text)
