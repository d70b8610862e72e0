"""The transaction-scoped writer handed to handlers.

Every bulk write takes the fast path: binary COPY into a temporary staging table, then one
set-based statement (`INSERT ... SELECT ... ON CONFLICT`, `DELETE ... USING`). Rows are
pre-aggregated per key first, so no statement touches a key twice (which ON CONFLICT DO UPDATE
refuses). The writer never commits: the batch transaction around it does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import orjson
import psycopg
from psycopg import pq, sql
from psycopg.adapt import Dumper
from psycopg.types.json import set_json_dumps

from .events import DeadLetter, Event

Conn = psycopg.Connection[tuple[Any, ...]]
Row = Sequence[Any]


def _json_dumps(obj: Any) -> bytes:
    """JSON for jsonb columns: bytes already holding JSON pass through untouched."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj)
    return orjson.dumps(obj)


class JsonBytes(bytes):
    """Bytes that already hold JSON, for jsonb parameters."""


class _JsonbBinaryDumper(Dumper):
    """jsonb in binary COPY (chosen by column type): version byte + JSON, one call a value."""

    format = pq.Format.BINARY

    def dump(self, obj: Any) -> bytes:
        return b"\x01" + _json_dumps(obj)


def prepare_connection(conn: Conn) -> None:
    """Per-connection adapters: orjson for json/jsonb values, a one-call jsonb COPY dumper."""
    set_json_dumps(_json_dumps, context=conn)
    jsonb = conn.adapters.types["jsonb"]
    dumper = type("JsonbBinaryDumper", (_JsonbBinaryDumper,), {"oid": jsonb.oid})
    conn.adapters.register_dumper(JsonBytes, dumper)


def _ident(name: str) -> sql.Composable:
    return sql.Identifier(*name.split("."))


def _cols(columns: Sequence[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


def last_per_key(rows: Iterable[Row], key_index: Sequence[int]) -> list[Row]:
    """Keep the last row for each key, in first-seen key order."""
    out: dict[tuple[Any, ...], Row] = {}
    for row in rows:
        out[tuple(row[i] for i in key_index)] = row
    return list(out.values())


def sum_per_key(rows: Iterable[Row], key_index: Sequence[int]) -> list[Row]:
    """Sum the non-key columns of rows sharing a key; rows summing to all zeros are dropped."""
    sums: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        key = tuple(row[i] for i in key_index)
        acc = sums.get(key)
        if acc is None:
            sums[key] = list(row)
        else:
            for i, value in enumerate(row):
                if i not in key_index:
                    acc[i] += value
    value_index = [i for i in range(len(next(iter(sums.values()), []))) if i not in key_index]
    return [tuple(r) for r in sums.values() if any(r[i] != 0 for i in value_index)]


class TableCatalog:
    """Column type OIDs per table, read once per connection, for binary COPY."""

    def __init__(self) -> None:
        self._types: dict[str, dict[str, int]] = {}

    def types(self, conn: Conn, table: str, columns: Sequence[str]) -> list[int]:
        known = self._types.get(table)
        if known is None:
            rows = conn.execute(
                "SELECT attname, atttypid FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (table,),
            ).fetchall()
            known = {str(name): int(oid) for name, oid in rows}
            self._types[table] = known
        missing = [c for c in columns if c not in known]
        if missing:
            raise ValueError(f"table {table} has no column(s) {', '.join(missing)}")
        return [known[c] for c in columns]


class Writer:
    """Writes of one batch, all inside the batch's PostgreSQL transaction."""

    def __init__(self, conn: Conn, catalog: TableCatalog) -> None:
        self._conn = conn
        self._catalog = catalog
        self._dead_letters: list[DeadLetter] = []

    @property
    def connection(self) -> Conn:
        """The transaction's connection, for SQL of the handler's own."""
        return self._conn

    def execute(self, query: Any, params: Any = None) -> psycopg.Cursor[tuple[Any, ...]]:
        return self._conn.execute(query, params)

    def dead_letter(self, event: Event, error_class: str, message: str) -> None:
        """Send one event to `dead_letters` in this same transaction instead of processing it."""
        self._dead_letters.append(DeadLetter.of(event, error_class, message))

    @property
    def dead_letters(self) -> list[DeadLetter]:
        return self._dead_letters

    # -- bulk writes -------------------------------------------------------------------------
    def insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Row],
        *,
        on_conflict: Literal["error", "ignore"] = "error",
    ) -> None:
        """Append rows. With on_conflict="ignore", rows whose key exists are skipped."""
        if not rows:
            return
        if on_conflict == "error":
            self._copy(_ident(table), table, columns, rows)
            return
        # Conflicts are rare (reprocessing after a replay): try a direct COPY first, and only
        # when a key exists go through staging with ON CONFLICT DO NOTHING.
        try:
            with self._conn.transaction():
                self._copy(_ident(table), table, columns, rows)
            return
        except psycopg.errors.UniqueViolation:
            pass
        staging = self._stage(table, columns, rows)
        self._conn.execute(
            sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM {s} ON CONFLICT DO NOTHING").format(
                t=_ident(table), c=_cols(columns), s=staging
            )
        )

    def upsert(
        self, table: str, key_columns: Sequence[str], columns: Sequence[str], rows: Sequence[Row]
    ) -> None:
        """Insert or replace by key; of several rows for one key the last one wins."""
        if not rows:
            return
        key_index = [columns.index(k) for k in key_columns]
        staging = self._stage(table, columns, last_per_key(rows, key_index))
        updates = [c for c in columns if c not in key_columns]
        action = (
            sql.SQL("DO UPDATE SET ")
            + sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updates
            )
            if updates
            else sql.SQL("DO NOTHING")
        )
        self._conn.execute(
            sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM {s} ON CONFLICT ({k}) ").format(
                t=_ident(table), c=_cols(columns), s=staging, k=_cols(key_columns)
            )
            + action
        )

    def accumulate(
        self, table: str, key_columns: Sequence[str], columns: Sequence[str], rows: Sequence[Row]
    ) -> None:
        """Add rows' values onto existing ones by key (counters, sums): pre-summed per key."""
        key_index = [columns.index(k) for k in key_columns]
        summed = sum_per_key(rows, key_index)
        if not summed:
            return
        staging = self._stage(table, columns, summed)
        adds = sql.SQL(", ").join(
            sql.SQL("{c} = {t}.{c} + EXCLUDED.{c}").format(
                c=sql.Identifier(c), t=sql.Identifier(table.split(".")[-1])
            )
            for c in columns
            if c not in key_columns
        )
        self._conn.execute(
            sql.SQL(
                "INSERT INTO {t} ({c}) SELECT {c} FROM {s} ON CONFLICT ({k}) DO UPDATE SET "
            ).format(t=_ident(table), c=_cols(columns), s=staging, k=_cols(key_columns))
            + adds
        )

    def delete(self, table: str, key_columns: Sequence[str], keys: Sequence[Row]) -> None:
        """Delete rows by key."""
        if not keys:
            return
        staging = self._stage(table, key_columns, keys)
        match = sql.SQL(" AND ").join(
            sql.SQL("d.{c} = s.{c}").format(c=sql.Identifier(c)) for c in key_columns
        )
        self._conn.execute(
            sql.SQL("DELETE FROM {t} AS d USING {s} AS s WHERE ").format(t=_ident(table), s=staging)
            + match
        )

    # -- plumbing ----------------------------------------------------------------------------
    def _stage(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> sql.Composable:
        """An empty temporary table shaped like `columns` of `table`, filled with `rows`."""
        digest = hashlib.blake2s(f"{table}({','.join(columns)})".encode(), digest_size=6)
        staging = sql.Identifier(f"_eos_stage_{digest.hexdigest()}")
        self._conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {s} ON COMMIT DELETE ROWS AS "
                "SELECT {c} FROM {t} WITH NO DATA; TRUNCATE {s}"
            ).format(s=staging, c=_cols(columns), t=_ident(table))
        )
        self._copy(staging, table, columns, rows)
        return staging

    def _copy(
        self, target: sql.Composable, typed_like: str, columns: Sequence[str], rows: Sequence[Row]
    ) -> None:
        """Binary COPY of rows into `target`, typed by the columns of table `typed_like`."""
        types = self._catalog.types(self._conn, typed_like, columns)
        with (
            self._conn.cursor() as cur,
            cur.copy(
                sql.SQL("COPY {t} ({c}) FROM STDIN (FORMAT BINARY)").format(
                    t=target, c=_cols(columns)
                )
            ) as copy,
        ):
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)


def dead_letter_rows(letters: Sequence[DeadLetter]) -> list[Row]:
    return [
        (
            d.topic,
            d.partition,
            d.offset,
            d.key,
            d.value,
            _headers_json(d.headers),
            d.error_class,
            d.error_message,
        )
        for d in letters
    ]


def _headers_json(headers: Sequence[tuple[str, bytes | None]]) -> bytes | None:
    """Headers as a JSON list of [name, text] pairs (names may repeat)."""
    if not headers:
        return None
    return orjson.dumps(
        [[k, None if v is None else v.decode("utf-8", "replace")] for k, v in headers]
    )


DEAD_LETTER_COLUMNS = (
    "src_topic",
    "src_partition",
    "src_offset",
    "key",
    "value",
    "headers",
    "error_class",
    "error_message",
)


def write_dead_letters(writer: Writer, letters: Sequence[DeadLetter]) -> None:
    """Idempotent: a dead letter already stored for the same source offset is kept."""
    writer.insert(
        "dead_letters", DEAD_LETTER_COLUMNS, dead_letter_rows(letters), on_conflict="ignore"
    )
