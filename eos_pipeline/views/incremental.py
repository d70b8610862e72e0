"""Incremental summaries: rebuild from the base tables; the view summing a sharded table.

A rebuild runs in one REPEATABLE READ transaction that first locks the summary table IN
EXCLUSIVE MODE (before its snapshot is taken): readers go on, while batch transactions that
want to add deltas wait behind it and then apply them to the rebuilt rows. A batch that already
added its deltas holds the table until it commits, so the rebuild's snapshot includes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from .definitions import IncrementalView
from .watermark import Refresh, record_refresh, view_transaction


def rebuild_statements(view: IncrementalView) -> list[sql.Composed]:
    table = sql.Identifier(view.table)
    rebuilt: sql.Composable = sql.SQL(view.rebuild_sql)
    columns = view.columns
    if view.sharded:
        rebuilt = sql.SQL("SELECT {}, 0, {} FROM ({}) AS rebuilt ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, view.key_columns)),
            sql.SQL(", ").join(map(sql.Identifier, view.counter_columns)),
            rebuilt,
            sql.SQL(", ").join(map(sql.Identifier, view.columns)),
        )
        columns = (*view.key_columns, view.shard_column, *view.counter_columns)
    return [
        sql.SQL("DELETE FROM {}").format(table),
        sql.SQL("INSERT INTO {} ({}) {}").format(
            table, sql.SQL(", ").join(map(sql.Identifier, columns)), rebuilt
        ),
    ]


def summing_view_statement(view: IncrementalView, counter_types: Mapping[str, str]) -> sql.Composed:
    """The plain view over a sharded table: one row per key with its shards' counters summed
    (in the counters' own types), keys whose counters all sum to zero left out."""
    keys = sql.SQL(", ").join(map(sql.Identifier, view.key_columns))
    sums = [sql.SQL("sum({})").format(sql.Identifier(c)) for c in view.counter_columns]
    return sql.SQL(
        "CREATE OR REPLACE VIEW {view} AS SELECT {keys}, {counters} FROM {table} "
        "GROUP BY {keys} HAVING {nonzero}"
    ).format(
        view=sql.Identifier(view.name),
        keys=keys,
        counters=sql.SQL(", ").join(
            sql.SQL("CAST({} AS {}) AS {}").format(s, sql.SQL(counter_types[c]), sql.Identifier(c))
            for s, c in zip(sums, view.counter_columns, strict=True)
        ),
        table=sql.Identifier(view.table),
        nonzero=sql.SQL(" OR ").join(sql.SQL("{} <> 0").format(s) for s in sums),
    )


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
