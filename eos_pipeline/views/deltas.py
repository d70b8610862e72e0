"""Pre-aggregation of summary deltas: one row per key, so a single `INSERT ... ON CONFLICT DO
UPDATE` never touches the same key twice (PostgreSQL rejects that with a cardinality error)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, TypeAlias

from psycopg import sql

Number: TypeAlias = int | Decimal
Key: TypeAlias = tuple[Any, ...]
Counters: TypeAlias = tuple[Number, ...]
Delta: TypeAlias = tuple[Key, Counters]


def aggregate_deltas(deltas: Iterable[Delta], key_width: int, counter_width: int) -> list[Delta]:
    """Sum the counters per key; keys whose sum is all zeros are left out (nothing to write).
    Sorted by key, so concurrent transactions lock summary rows in one order."""
    totals: dict[Key, list[Number]] = {}
    for key, counters in deltas:
        if len(key) != key_width or len(counters) != counter_width:
            raise ValueError(
                f"a delta needs {key_width} key value(s) and {counter_width} counter(s), "
                f"got {key!r}, {counters!r}"
            )
        sums = totals.setdefault(tuple(key), [0] * counter_width)
        for i, value in enumerate(counters):
            sums[i] += value
    nonzero = [(key, tuple(sums)) for key, sums in totals.items() if any(sums)]
    return sorted(nonzero, key=lambda delta: repr(delta[0]))


def upsert_statement(
    table: str, key_columns: Sequence[str], counter_columns: Sequence[str], rows: int
) -> sql.Composed:
    """`INSERT ... VALUES (...) x rows ON CONFLICT (keys) DO UPDATE` adding each counter."""
    columns = [*key_columns, *counter_columns]
    row = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(columns)))
    target = sql.Identifier(table)
    additions = sql.SQL(", ").join(
        sql.SQL("{c} = {t}.{c} + EXCLUDED.{c}").format(c=sql.Identifier(c), t=target)
        for c in counter_columns
    )
    return sql.SQL(
        "INSERT INTO {t} ({cols}) VALUES {rows} ON CONFLICT ({keys}) DO UPDATE SET {adds}"
    ).format(
        t=target,
        cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
        rows=sql.SQL(", ").join([row] * rows),
        keys=sql.SQL(", ").join(map(sql.Identifier, key_columns)),
        adds=additions,
    )


@functools.lru_cache(maxsize=512)
def upsert_statement_bytes(
    table: str, key_columns: tuple[str, ...], counter_columns: tuple[str, ...], rows: int
) -> bytes:
    """`upsert_statement`, composed once per shape: it runs in every batch transaction."""
    return upsert_statement(table, key_columns, counter_columns, rows).as_bytes(None)


def flatten(deltas: Sequence[Delta]) -> list[Any]:
    """The parameters of `upsert_statement` for these (aggregated) deltas, row by row."""
    return [value for key, counters in deltas for value in (*key, *counters)]
