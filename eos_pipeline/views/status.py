"""What `views list` and `views show` read: each view's rows and its last recorded refresh."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from .definitions import IncrementalView, ViewDefinition
from .watermark import PartitionOffset, offsets_from_json, view_errors


@dataclass(frozen=True)
class ViewStatus:
    name: str
    kind: str
    rows: int | None  # None: the view is not in the database
    refreshed_at: datetime | None
    duration_ms: float | None
    offsets: tuple[PartitionOffset, ...] | None  # None: never refreshed or rebuilt


def _relation(view: ViewDefinition) -> str:
    """What readers query: a materialized view, a summary table, or a sharded one's view."""
    return view.table if isinstance(view, IncrementalView) and not view.sharded else view.name


def nonzero_filter(view: ViewDefinition) -> sql.Composable:
    """Incremental rows whose counters are all zero mean "no such key" and are not shown."""
    if not isinstance(view, IncrementalView):
        return sql.SQL("")
    checks = sql.SQL(" OR ").join(
        sql.SQL("{} <> 0").format(sql.Identifier(c)) for c in view.counter_columns
    )
    return sql.SQL(" WHERE {}").format(checks)


def select_rows(view: ViewDefinition, limit: int | None) -> sql.Composed:
    return sql.SQL("SELECT * FROM {}{} ORDER BY {}{}").format(
        sql.Identifier(_relation(view)),
        nonzero_filter(view),
        sql.SQL(", ").join(map(sql.Identifier, view.order_by)),
        sql.SQL("") if limit is None else sql.SQL(" LIMIT {}").format(sql.Literal(limit)),
    )


def _exists(conn: psycopg.Connection[Any], relation: str) -> bool:
    row = conn.execute("SELECT to_regclass(quote_ident(%s)) IS NOT NULL", (relation,)).fetchone()
    return bool(row and row[0])


def _count(conn: psycopg.Connection[Any], view: ViewDefinition) -> int | None:
    if not _exists(conn, _relation(view)):
        return None
    query = sql.SQL("SELECT count(*) FROM {}{}").format(
        sql.Identifier(_relation(view)), nonzero_filter(view)
    )
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def view_status(conn: psycopg.Connection[Any], view: ViewDefinition) -> ViewStatus:
    with view_errors("status", view.name), conn.transaction():
        rows = _count(conn, view)
        recorded = conn.execute(
            "SELECT refreshed_at, duration_ms, offsets FROM eos_view_refreshes"
            " WHERE view_name = %s",
            (view.name,),
        ).fetchone()
    refreshed_at, duration_ms, offsets = recorded or (None, None, None)
    return ViewStatus(
        name=view.name,
        kind=view.kind,
        rows=rows,
        refreshed_at=refreshed_at,
        duration_ms=duration_ms,
        offsets=None if refreshed_at is None else offsets_from_json(offsets),
    )


def fetch_rows(
    conn: psycopg.Connection[Any], view: ViewDefinition, limit: int | None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of the view in key order."""
    with view_errors("show", view.name), conn.cursor() as cur:
        cur.execute(select_rows(view, limit))
        columns = [d.name for d in cur.description or ()]
        return columns, cur.fetchall()
