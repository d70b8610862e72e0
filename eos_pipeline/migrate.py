"""Schema migrations, run programmatically with Alembic on the project's migrations/."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool
from sqlalchemy.exc import OperationalError

from .db import mask_url, reason, sqlalchemy_url
from .errors import DatabaseUnavailable

_ROOT = Path(__file__).resolve().parent.parent


def alembic_config() -> Config:
    cfg = Config(str(_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(_ROOT / "migrations"))
    return cfg


def _run(url: str, action: str, revision: str) -> None:
    engine = create_engine(
        sqlalchemy_url(url), poolclass=pool.NullPool, connect_args={"connect_timeout": 5}
    )
    try:
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            getattr(command, action)(cfg, revision)
    except OperationalError as exc:
        cause = exc.orig if exc.orig is not None else exc
        raise DatabaseUnavailable(f"cannot migrate {mask_url(url)}: {reason(cause)}") from None
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    _run(url, "upgrade", revision)


def downgrade(url: str, revision: str) -> None:
    _run(url, "downgrade", revision)
