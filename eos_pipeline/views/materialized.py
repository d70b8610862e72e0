"""Materialized views: their DDL and one refresh.

A refresh runs in a REPEATABLE READ transaction on the caller's autocommit connection:
1. `pg_try_advisory_xact_lock` keyed by the view name: one refresh of a view at a time, also
   across processes; a busy view is skipped, never waited for;
2. read eos_offsets (the watermark);
3. `REFRESH MATERIALIZED VIEW CONCURRENTLY`, which PostgreSQL allows inside a transaction
   block and computes from the transaction's snapshot; readers keep reading the old rows;
4. upsert the watermark into eos_view_refreshes; commit.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from ..errors import ViewError
from .definitions import MaterializedView
from .watermark import Refresh, record_refresh, view_transaction

# First key of the two-key advisory locks taken on views ("eosv"); the second is the name's hash.
ADVISORY_NAMESPACE = 0x656F7376


def index_name(view: MaterializedView) -> str:
    return f"{view.name}_key"[:63]


def create_statements(view: MaterializedView) -> list[sql.Composed]:
    """Create and populate the view, then the plain unique index CONCURRENTLY needs."""
    name = sql.Identifier(view.name)
    return [
        sql.SQL("CREATE MATERIALIZED VIEW {} AS {} WITH DATA").format(name, sql.SQL(view.sql)),
        sql.SQL("CREATE UNIQUE INDEX {} ON {} ({})").format(
            sql.Identifier(index_name(view)),
            name,
            sql.SQL(", ").join(map(sql.Identifier, view.unique_key)),
        ),
    ]


def drop_statements(view: MaterializedView) -> list[sql.Composed]:
    return [sql.SQL("DROP MATERIALIZED VIEW IF EXISTS {}").format(sql.Identifier(view.name))]


def refresh_statement(view: MaterializedView, populated: bool) -> sql.Composed:
    """CONCURRENTLY needs a populated view; a view created WITH NO DATA gets one plain refresh."""
    keyword = sql.SQL("CONCURRENTLY ") if populated else sql.SQL("")
    return sql.SQL("REFRESH MATERIALIZED VIEW {}{}").format(keyword, sql.Identifier(view.name))


def _try_lock(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute(
        "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", (ADVISORY_NAMESPACE, name)
    ).fetchone()
    return bool(row and row[0])


def _populated(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute(
        "SELECT ispopulated FROM pg_matviews"
        " WHERE schemaname = current_schema() AND matviewname = %s",
        (name,),
    ).fetchone()
    if row is None:
        raise ViewError(
            f"materialized view {name} is not in the database; run the migration that creates"
            " it (create_view_op), e.g. `python -m eos_pipeline migrate`"
        )
    return bool(row[0])


def refresh_in_transaction(conn: psycopg.Connection[Any], view: MaterializedView) -> Refresh | None:
    """Steps 1-4 inside the caller's snapshot transaction; None when another session is
    refreshing this view right now."""
    if not _try_lock(conn, view.name):
        return None
    statement = refresh_statement(view, _populated(conn, view.name))
    return record_refresh(conn, view.name, view.kind, lambda: conn.execute(statement))


def refresh_view(conn: psycopg.Connection[Any], view: MaterializedView) -> Refresh | None:
    """One refresh in its own transaction (see the module docstring); None when busy."""
    with view_transaction(conn, "refresh", view.name):
        return refresh_in_transaction(conn, view)
