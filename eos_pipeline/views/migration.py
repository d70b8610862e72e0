"""Alembic operations for views, so a user's migration declares its views like 0003 does:

    from alembic import op  # noqa: F401  (the helpers use the migration's context)
    from eos_pipeline.views import create_view_op, drop_view_op
    from my_views import DAILY_TOTALS

    def upgrade() -> None:
        create_view_op(DAILY_TOTALS)

    def downgrade() -> None:
        drop_view_op(DAILY_TOTALS)

A migration uses the definition as it is when the migration runs; to change a view's SQL, add
a migration that drops the old definition and creates the new one.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from psycopg import sql

from .definitions import MaterializedView, ViewDefinition
from .incremental import rebuild_statements, summing_view_statement
from .materialized import create_statements, drop_statements


def _execute(statements: Sequence[sql.Composable]) -> None:
    for statement in statements:
        # Escape colons so SQLAlchemy's text() does not read ':name' in the SQL as a parameter.
        op.execute(sa.text(statement.as_string().replace(":", "\\:")))


def _register(view: ViewDefinition) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO eos_view_refreshes (view_name, kind) VALUES ({}, {})"
        " ON CONFLICT (view_name) DO UPDATE SET kind = EXCLUDED.kind"
    ).format(sql.Literal(view.name), sql.Literal(view.kind))


def _unregister(view: ViewDefinition) -> sql.Composed:
    return sql.SQL("DELETE FROM eos_view_refreshes WHERE view_name = {}").format(
        sql.Literal(view.name)
    )


def _column_types(table: str) -> dict[str, str]:
    rows = op.get_bind().execute(
        sa.text(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped"
        ),
        {"t": table},
    )
    return {str(name): str(kind) for name, kind in rows}


def create_view_op(view: ViewDefinition) -> None:
    """A materialized view: create, populate and index it. An incremental view: its table must
    exist already (create it with op.create_table); it is filled from rebuild_sql, and a
    sharded one gets its summing view."""
    if isinstance(view, MaterializedView):
        _execute([*create_statements(view), _register(view)])
        return
    statements = rebuild_statements(view)
    if view.sharded:
        statements.append(summing_view_statement(view, _column_types(view.table)))
    _execute([*statements, _register(view)])


def drop_view_op(view: ViewDefinition) -> None:
    """A materialized view is dropped; an incremental view's table stays (its migration owns
    it), only its registration (and a sharded one's summing view) goes."""
    statements: list[sql.Composable] = []
    if isinstance(view, MaterializedView):
        statements = list(drop_statements(view))
    elif view.sharded:
        statements = [sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier(view.name))]
    _execute([*statements, _unregister(view)])
