"""The transaction-scoped writer handed to handlers.

Every bulk write is one set-based statement (`INSERT ... SELECT ... ON CONFLICT`,
`DELETE ... USING`) reading its rows from a source named `s`: for a few rows, arrays bound as
parameters (`unnest`); for many, a temporary staging table filled by binary COPY first. Rows
are pre-aggregated per key, so no statement touches a key twice (which ON CONFLICT DO UPDATE
refuses). The writer never commits: the batch transaction around it does.

Round trips and server work are what a small batch pays for, so a connection's catalog
remembers column types, composed statements and the staging tables that already exist, and an
optimistic writer appends with a bare COPY (the batch is redone with a careful writer if a key
already exists).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import orjson
import psycopg
from psycopg import pq, sql
from psycopg.adapt import Dumper
from psycopg.types.json import Jsonb, set_json_dumps

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
        if isinstance(obj, bytes):  # a record's own JSON: the common case, one call a row
            return b"\x01" + obj
        return b"\x01" + _json_dumps(obj)


def prepare_connection(conn: Conn) -> None:
    """Per-connection adapters: orjson for json/jsonb values, a one-call jsonb COPY dumper.

    Plans are made for each execution's parameters: the pipeline's tables start empty and
    grow, and a cached generic plan chosen while `orders` was empty (a sequential scan for
    `order_id = ANY(...)`) would otherwise be kept while the table grows.
    """
    conn.execute("SET plan_cache_mode = force_custom_plan")
    # Every execution is planned anyway, so server-side prepared statements would only save
    # the parse, for more client-side bookkeeping per statement than they save.
    conn.prepare_threshold = None
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


def _insert_select(
    table: str, columns: Sequence[str], source: sql.Composable, conflict: sql.Composable
) -> sql.Composable:
    """INSERT of a row source's rows into `table`, with its ON CONFLICT clause."""
    return (
        sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM {s} ").format(
            t=_ident(table), c=_cols(columns), s=source
        )
        + conflict
    )


# Column types (as format_type names them) whose arrays bind from plain Python values and cast
# back without loss. Not `character`: cast without a length it is character(1).
BINDABLE_TYPES = frozenset(
    {
        "boolean",
        "smallint",
        "integer",
        "bigint",
        "real",
        "double precision",
        "numeric",
        "text",
        "character varying",
        "uuid",
        "bytea",
        "date",
        "time without time zone",
        "timestamp without time zone",
        "timestamp with time zone",
        "interval",
        "json",
        "jsonb",
    }
)
_JSON_TYPES = frozenset({"json", "jsonb"})
# Up to this many values (rows x columns) a write binds arrays instead of staging. Measured on
# the orders upsert (30 rows x 11 columns): binding costs ~90 us more client CPU than COPY
# formatting, staging two more round trips (~110 us client CPU) and ~0.5 ms of server time
# (the COPY, and truncating the staging table at every commit). Many rows amortise the
# staging; binding costs 2.5x COPY's client CPU per value.
BIND_VALUES_MAX = 2048


class _Column(NamedTuple):
    oid: int  # the type binary COPY dumps the column's values as
    type_name: str


TEXT_OID = 25


def _copy_oid(conn: Conn, oid: int) -> int:
    """Types psycopg has no binary dumper for (char(n), enums, citext, ...) take text's: their
    binary input is the text itself."""
    try:
        conn.adapters.get_dumper_by_oid(oid, pq.Format.BINARY)
    except psycopg.ProgrammingError:
        return TEXT_OID
    return oid


class TableCatalog:
    """What one connection knows of its tables: column types (for binary COPY and bound
    arrays), composed statements, and the staging tables committed into its session."""

    def __init__(self, bind_values_max: int = BIND_VALUES_MAX) -> None:
        self.bind_values_max = bind_values_max
        self._columns: dict[str, dict[str, _Column]] = {}
        self._statements: dict[tuple[Any, ...], bytes] = {}
        self._staging: set[str] = set()

    def _of(self, conn: Conn, table: str, columns: Sequence[str]) -> list[_Column]:
        known = self._columns.get(table)
        if known is None:
            rows = conn.execute(
                "SELECT attname, atttypid, format_type(atttypid, NULL) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (table,),
            ).fetchall()
            known = {
                str(name): _Column(_copy_oid(conn, int(oid)), str(type_name))
                for name, oid, type_name in rows
            }
            self._columns[table] = known
        missing = [c for c in columns if c not in known]
        if missing:
            raise ValueError(f"table {table} has no column(s) {', '.join(missing)}")
        return [known[c] for c in columns]

    def types(self, conn: Conn, table: str, columns: Sequence[str]) -> list[int]:
        """Type OIDs of `columns`, for binary COPY."""
        return [c.oid for c in self._of(conn, table, columns)]

    def array_types(self, conn: Conn, table: str, columns: Sequence[str]) -> list[str] | None:
        """Type names of `columns` if every one of them can be bound as an array, else None."""
        names = [c.type_name for c in self._of(conn, table, columns)]
        if "%" in table or any("%" in c for c in columns):
            return None  # the statement is sent with parameters: a % would be a placeholder
        return names if all(n in BINDABLE_TYPES for n in names) else None

    def statement(
        self, conn: Conn, key: tuple[Any, ...], build: Callable[[], sql.Composable]
    ) -> bytes:
        """A statement composed once per connection (composing costs more than sending)."""
        found = self._statements.get(key)
        if found is None:
            found = self._statements[key] = build().as_bytes(conn)
        return found

    def has_staging(self, name: str) -> bool:
        return name in self._staging

    def staging_committed(self, names: Iterable[str]) -> None:
        """Staging tables created by a committed transaction exist for the session's life."""
        self._staging.update(names)

    def forget_staging(self) -> None:
        """After a failed transaction: what it created is gone, so create on next use."""
        self._staging.clear()


@dataclass(frozen=True, slots=True)
class RowSource:
    """The rows of one write as a statement reads them, under the name `s`: arrays bound as
    parameters (`kind` "bound") or a filled staging table ("staged")."""

    kind: Literal["bound", "staged"]
    columns: Sequence[str]
    types: Sequence[str] = ()
    staging: str = ""
    params: list[list[Any]] | None = None

    @classmethod
    def bound(cls, columns: Sequence[str], types: Sequence[str], rows: Sequence[Row]) -> RowSource:
        arrays = [list(values) for values in zip(*rows, strict=True)]
        for i, type_name in enumerate(types):
            if type_name in _JSON_TYPES:
                arrays[i] = [_json_param(v) for v in arrays[i]]
        return cls("bound", columns, types=types, params=arrays)

    @classmethod
    def staged(cls, columns: Sequence[str], staging: str) -> RowSource:
        return cls("staged", columns, staging=staging)

    def from_clause(self) -> sql.Composable:
        if self.kind == "staged":
            return sql.SQL("{} AS s").format(sql.Identifier(self.staging))
        arrays = sql.SQL(", ").join(sql.SQL(f"%b::{t}[]") for t in self.types)
        return sql.SQL("unnest({a}) AS s({c})").format(a=arrays, c=_cols(self.columns))


def _json_param(value: Any) -> Any:
    """A json/jsonb value to bind: bytes already hold JSON, anything else is encoded."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return JsonBytes(value)
    return Jsonb(value)


class Writer:
    """Writes of one batch, all inside the batch's PostgreSQL transaction."""

    def __init__(self, conn: Conn, catalog: TableCatalog, *, optimistic: bool = False) -> None:
        self._conn = conn
        self._catalog = catalog
        # Optimistic: no savepoints; a conflict aborts the transaction and the caller redoes
        # the batch with a careful writer.
        self.optimistic = optimistic
        self._dead_letters: list[DeadLetter] = []
        self._staged: set[str] = set()  # staging tables filled in this transaction
        self.created: set[str] = set()  # staging tables this transaction may have created

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
        if on_conflict == "error" or self.optimistic:
            self._copy(table, table, columns, rows)
            return
        # Conflicts are rare (reprocessing after a replay): try a direct COPY first, and only
        # when a key exists go through a row source with ON CONFLICT DO NOTHING.
        try:
            with self._conn.transaction():
                self._copy(table, table, columns, rows)
            return
        except psycopg.errors.UniqueViolation:
            pass
        source = self._source(table, columns, rows)
        self._execute(
            ("insert-ignore", source.kind, table, tuple(columns)),
            lambda: _insert_select(
                table, columns, source.from_clause(), sql.SQL("ON CONFLICT DO NOTHING")
            ),
            source.params,
        )

    def upsert(
        self, table: str, key_columns: Sequence[str], columns: Sequence[str], rows: Sequence[Row]
    ) -> None:
        """Insert or replace by key; of several rows for one key the last one wins."""
        if not rows:
            return
        key_index = [columns.index(k) for k in key_columns]
        source = self._source(table, columns, last_per_key(rows, key_index))

        def build() -> sql.Composable:
            updates = [c for c in columns if c not in key_columns]
            action = (
                sql.SQL("DO UPDATE SET ")
                + sql.SQL(", ").join(
                    sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updates
                )
                if updates
                else sql.SQL("DO NOTHING")
            )
            conflict = sql.SQL("ON CONFLICT ({k}) ").format(k=_cols(key_columns))
            return _insert_select(table, columns, source.from_clause(), conflict + action)

        key = ("upsert", source.kind, table, tuple(key_columns), tuple(columns))
        self._execute(key, build, source.params)

    def accumulate(
        self, table: str, key_columns: Sequence[str], columns: Sequence[str], rows: Sequence[Row]
    ) -> None:
        """Add rows' values onto existing ones by key (counters, sums): pre-summed per key."""
        key_index = [columns.index(k) for k in key_columns]
        summed = sum_per_key(rows, key_index)
        if not summed:
            return
        source = self._source(table, columns, summed)

        def build() -> sql.Composable:
            adds = sql.SQL(", ").join(
                sql.SQL("{c} = {t}.{c} + EXCLUDED.{c}").format(
                    c=sql.Identifier(c), t=sql.Identifier(table.split(".")[-1])
                )
                for c in columns
                if c not in key_columns
            )
            conflict = sql.SQL("ON CONFLICT ({k}) DO UPDATE SET ").format(k=_cols(key_columns))
            return _insert_select(table, columns, source.from_clause(), conflict + adds)

        key = ("accumulate", source.kind, table, tuple(key_columns), tuple(columns))
        self._execute(key, build, source.params)

    def delete(self, table: str, key_columns: Sequence[str], keys: Sequence[Row]) -> None:
        """Delete rows by key."""
        if not keys:
            return
        source = self._source(table, key_columns, keys)

        def build() -> sql.Composable:
            match = sql.SQL(" AND ").join(
                sql.SQL("d.{c} = s.{c}").format(c=sql.Identifier(c)) for c in key_columns
            )
            return (
                sql.SQL("DELETE FROM {t} AS d USING {s} WHERE ").format(
                    t=_ident(table), s=source.from_clause()
                )
                + match
            )

        self._execute(("delete", source.kind, table, tuple(key_columns)), build, source.params)

    # -- plumbing ----------------------------------------------------------------------------
    def _execute(
        self, key: tuple[Any, ...], build: Callable[[], sql.Composable], params: Any = None
    ) -> None:
        self._conn.execute(self._catalog.statement(self._conn, key, build), params)

    def _source(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> RowSource:
        """Where a statement reads `rows` from: bound arrays when they are few and every
        column's type binds, else a staging table."""
        if len(rows) * len(columns) <= self._catalog.bind_values_max:
            types = self._catalog.array_types(self._conn, table, columns)
            if types is not None:
                return RowSource.bound(columns, types, rows)
        return RowSource.staged(columns, self._stage(table, columns, rows))

    def _stage(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> str:
        """A temporary table shaped like `columns` of `table`, holding exactly `rows`.

        ON COMMIT DELETE ROWS empties it at every commit, and a rollback takes its rows away,
        so it only needs emptying when one transaction fills it twice."""
        digest = hashlib.blake2s(f"{table}({','.join(columns)})".encode(), digest_size=6)
        staging = f"_eos_stage_{digest.hexdigest()}"
        # Careful writers always ask: a savepoint rolled back may have taken the table away.
        exists = staging in self.created or self._catalog.has_staging(staging)
        if not (self.optimistic and exists):
            self._execute(
                ("create-staging", staging),
                lambda: sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {s} ON COMMIT DELETE ROWS AS "
                    "SELECT {c} FROM {t} WITH NO DATA"
                ).format(s=sql.Identifier(staging), c=_cols(columns), t=_ident(table)),
            )
            self.created.add(staging)
        if staging in self._staged:
            self._execute(
                ("empty-staging", staging),
                lambda: sql.SQL("DELETE FROM {s}").format(s=sql.Identifier(staging)),
            )
        self._staged.add(staging)
        self._copy(staging, table, columns, rows)
        return staging

    def _copy(
        self, target: str, typed_like: str, columns: Sequence[str], rows: Sequence[Row]
    ) -> None:
        """Binary COPY of rows into table `target`, typed by the columns of table `typed_like`."""
        types = self._catalog.types(self._conn, typed_like, columns)
        statement = self._catalog.statement(
            self._conn,
            ("copy", target, tuple(columns)),
            lambda: sql.SQL("COPY {t} ({c}) FROM STDIN (FORMAT BINARY)").format(
                t=_ident(target), c=_cols(columns)
            ),
        )
        with self._conn.cursor() as cur, cur.copy(statement) as copy:
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
