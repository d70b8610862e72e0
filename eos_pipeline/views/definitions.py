"""Declarative view definitions: what a view computes, its unique key and when to refresh it.

Two kinds:
- `MaterializedView`: a PostgreSQL materialized view over the pipeline's tables, refreshed
  with `REFRESH MATERIALIZED VIEW CONCURRENTLY` (readers are never blocked) by the refresher
  or by `views refresh`.
- `IncrementalView`: a summary table the pipeline updates with counter deltas inside each batch
  transaction (`apply`), so it is always exactly as current as the offsets; `rebuild_sql`
  recomputes it from the base tables (`views rebuild`).

Definitions are frozen and validated when built; names are plain lower-case SQL identifiers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import psycopg

from .deltas import Delta, aggregate_deltas, flatten, upsert_statement_bytes

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_identifier(what: str, value: str) -> str:
    """Names go into SQL quoted, but plain lower-case ones keep psql and migrations simple."""
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"{what} {value!r} must be a lower-case SQL identifier ([a-z_][a-z0-9_]*)")
    return value


def _check_columns(what: str, columns: tuple[str, ...]) -> None:
    if not columns:
        raise ValueError(f"{what} needs at least one column")
    for column in columns:
        check_identifier(what, column)
    if len(set(columns)) != len(columns):
        raise ValueError(f"{what} repeats a column: {columns!r}")


def _check_select(what: str, text: str) -> None:
    if not text.strip() or text.rstrip().endswith(";"):
        raise ValueError(f"{what} must be one SELECT statement without a trailing ';'")


@dataclass(frozen=True)
class RefreshPolicy:
    """When the refresher refreshes a materialized view: every N seconds, after N committed
    batches, whichever comes first; with neither it is manual (`views refresh` only)."""

    every_seconds: float | None = None
    every_batches: int | None = None

    def __post_init__(self) -> None:
        if self.every_seconds is not None and self.every_seconds <= 0:
            raise ValueError("every_seconds must be positive")
        if self.every_batches is not None and self.every_batches < 1:
            raise ValueError("every_batches must be at least 1")

    @property
    def manual(self) -> bool:
        return self.every_seconds is None and self.every_batches is None

    def describe(self) -> str:
        parts = []
        if self.every_seconds is not None:
            parts.append(f"every {self.every_seconds:g} s")
        if self.every_batches is not None:
            parts.append(f"after {self.every_batches} batches")
        return " or ".join(parts) or "manual"


MANUAL = RefreshPolicy()


def every(seconds: float) -> RefreshPolicy:
    return RefreshPolicy(every_seconds=seconds)


def after_batches(count: int) -> RefreshPolicy:
    return RefreshPolicy(every_batches=count)


@dataclass(frozen=True)
class MaterializedView:
    """`CREATE MATERIALIZED VIEW name AS sql` plus the plain unique index on `unique_key` that
    `REFRESH ... CONCURRENTLY` needs (its columns must never be NULL, or rows are rewritten
    on every refresh)."""

    kind: ClassVar[str] = "materialized"

    name: str
    sql: str
    unique_key: tuple[str, ...]
    refresh: RefreshPolicy = MANUAL
    description: str = ""

    def __post_init__(self) -> None:
        check_identifier("view name", self.name)
        _check_columns(f"unique key of {self.name}", self.unique_key)
        _check_select(f"SQL of {self.name}", self.sql)

    @property
    def order_by(self) -> tuple[str, ...]:
        return self.unique_key


@dataclass(frozen=True)
class IncrementalView:
    """A summary table keyed by `key_columns` whose `counter_columns` the pipeline adjusts with
    deltas in its own transaction. `rebuild_sql` selects the key columns then the counter
    columns, in that order, from the base tables; it should yield no all-zero rows.

    Rows whose counters are all zero may remain after deltas; they mean the same as an absent
    key, and readers (`views show`) leave them out.

    With `shard_column`, the counters live in `table` once per key and shard, and `name` is a
    plain view summing the shards. A summary every batch updates has few keys, and a row a
    transaction updated stays locked until its COMMIT: unsharded, concurrent batches (workers,
    processes) queue behind each other's commits. Each batch adds to the shards of its own
    source partitions, which no other committer holds; a delta's key then ends with its shard.
    A rebuild puts every key in shard 0."""

    kind: ClassVar[str] = "incremental"

    name: str
    key_columns: tuple[str, ...]
    counter_columns: tuple[str, ...]
    rebuild_sql: str
    table: str = ""
    shard_column: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        check_identifier("view name", self.name)
        if not self.table:
            object.__setattr__(self, "table", self.name)
        check_identifier(f"table of {self.name}", self.table)
        _check_columns(f"key of {self.name}", self.key_columns)
        _check_columns(f"counters of {self.name}", self.counter_columns)
        if set(self.key_columns) & set(self.counter_columns):
            raise ValueError(f"{self.name}: a column cannot be both key and counter")
        if self.shard_column:
            check_identifier(f"shard column of {self.name}", self.shard_column)
            if self.shard_column in self.key_columns + self.counter_columns:
                raise ValueError(f"{self.name}: the shard column cannot be a key or counter")
            if self.table == self.name:
                raise ValueError(f"{self.name}: a sharded view needs a table of another name")
        _check_select(f"rebuild SQL of {self.name}", self.rebuild_sql)

    @property
    def sharded(self) -> bool:
        return bool(self.shard_column)

    @property
    def table_key(self) -> tuple[str, ...]:
        """The key of `table`'s rows: the view's key, then the shard if there is one."""
        return (*self.key_columns, self.shard_column) if self.sharded else self.key_columns

    @property
    def columns(self) -> tuple[str, ...]:
        """The view's columns, as `rebuild_sql` selects them and readers see them."""
        return (*self.key_columns, *self.counter_columns)

    @property
    def order_by(self) -> tuple[str, ...]:
        return self.key_columns

    def apply(self, conn: psycopg.Connection[Any], deltas: Iterable[Delta]) -> int:
        """Add the deltas inside the caller's transaction with one statement; returns how
        many rows changed. Each delta is `(key values [+ shard], counter values)`."""
        rows = aggregate_deltas(deltas, len(self.table_key), len(self.counter_columns))
        if rows:
            statement = upsert_statement_bytes(
                self.table, self.table_key, tuple(self.counter_columns), len(rows)
            )
            conn.execute(statement, flatten(rows))
        return len(rows)


ViewDefinition: TypeAlias = MaterializedView | IncrementalView
