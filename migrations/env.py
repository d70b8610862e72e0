"""Alembic environment: the database comes from EOS_DATABASE_URL, or a connection passed in
through `config.attributes["connection"]` (how `python -m eos_pipeline migrate` and the tests
run it)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from eos_pipeline.config import load_settings
from eos_pipeline.db import sqlalchemy_url

config = context.config


def run_migrations_offline() -> None:
    context.configure(url=sqlalchemy_url(load_settings().database_url), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.attributes.get("url") or load_settings().database_url
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
