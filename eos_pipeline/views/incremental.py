"""Incremental summaries: rebuild from the base tables.

A rebuild runs in one REPEATABLE READ transaction that first locks the summary table IN
EXCLUSIVE MODE (before its snapshot is taken): readers go on, while batch transactions that
want to add deltas wait behind it and then apply them to the rebuilt rows. A batch that already
added its deltas holds the table until it commits, so the rebuild's snapshot includes it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from .definitions import IncrementalView
from .watermark import Refresh, record_refresh, view_transaction


def rebuild_statements(view: IncrementalView) -> list[sql.Composed]:
    table = sql.Identifier(view.table)
    return [
        sql.SQL("DELETE FROM {}").format(table),
        sql.SQL("INSERT INTO {} ({}) {}").format(
            table,
            sql.SQL(", ").join(map(sql.Identifier, view.columns)),
            sql.SQL(view.rebuild_sql),
        ),
    ]


def _lock(conn: psycopg.Connection[Any], view: IncrementalView) -> None:
    conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.Identifier(view.table)))


def _run(conn: psycopg.Connection[Any], statements: list[sql.Composed]) -> None:
    for statement in statements:
        conn.execute(statement)


def rebuild_view(conn: psycopg.Connection[Any], view: IncrementalView) -> Refresh:
    """Recompute the summary from the base tables and record the watermark, atomically."""
    with view_transaction(conn, "rebuild", view.name):
        _lock(conn, view)
        statements = rebuild_statements(view)
        return record_refresh(conn, view.name, view.kind, lambda: _run(conn, statements))
