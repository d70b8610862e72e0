"""PostgreSQL connections: URL handling (masked in every message) and autocommit sessions.

Connections run in autocommit; every transaction is an explicit `with conn.transaction()`,
so no connection ever sits "idle in transaction" after a read.
"""

from __future__ import annotations

import re

import psycopg
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .errors import ConfigError, DatabaseUnavailable

CONNECT_TIMEOUT_S = 5


def parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(f"not a database URL: {mask_url(url)}") from None
    if not parsed.drivername.startswith("postgresql"):
        raise ConfigError(f"EOS_DATABASE_URL must be a postgresql URL, got {mask_url(url)}")
    return parsed


# A password given as a parameter: `?password=...` in a URL, `password=...` in a libpq DSN.
_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, also for URLs that do not parse."""
    return _PASSWORD_PARAM.sub(r"\1***", _mask_userinfo(url))


def _mask_userinfo(url: str) -> str:
    # With several "@" the parser takes the first as the end of the password (a raw "@" in
    # the password), which would show the rest of it: mask up to the last "@" instead.
    if url.count("@") <= 1:
        try:
            return make_url(url).render_as_string(hide_password=True)
        except (ArgumentError, ValueError):
            pass
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def sqlalchemy_url(url: str) -> str:
    """The URL for SQLAlchemy, always with the psycopg 3 driver."""
    parsed = parse_url(url)
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def conninfo(url: str) -> str:
    """The URL as libpq understands it (no SQLAlchemy driver suffix)."""
    parsed = parse_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def reason(exc: BaseException) -> str:
    """A driver error as one line (libpq spreads its messages over several)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def connect(url: str, *, application_name: str = "eos-pipeline") -> psycopg.Connection[tuple]:  # type: ignore[type-arg]
    try:
        return psycopg.connect(
            conninfo(url),
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=application_name,
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to {mask_url(url)}: {reason(exc)}") from None
