"""Where a state is: a ``postgresql://`` URL names a PostgreSQL database, anything else a
SQLite file; how a URL is shown (never with its password)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

#: A location with one of these schemes is PostgreSQL (``config`` has the same list).
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def shown_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def is_url(location: str | Path) -> bool:
    """Does ``location`` name a PostgreSQL database (rather than a SQLite file)?"""
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)
