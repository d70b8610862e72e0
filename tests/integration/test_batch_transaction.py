"""One batch, one transaction, against the real server. The fence statement locks and moves
only what the epoch allows; the optimistic pass (no savepoints) and the careful redo after a
failure must leave exactly what the careful path alone would."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from uuid import UUID

import orjson
import pytest

from eos_pipeline.db import connect
from eos_pipeline.events import DeadLetter, Event
from eos_pipeline.handlers import HandlerSpec
from eos_pipeline.offsets import (
    Claim,
    OffsetRow,
    Outcome,
    claim,
    fence_outcome,
    lock_and_advance,
)
from eos_pipeline.transaction import BatchContext, CommitResult, commit_batch
from eos_pipeline.writer import Conn, TableCatalog, Writer, prepare_connection

TOPIC = "tx"
GROUP = "g-tx"
LEDGER = ("id", "note")


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    c = connect(database_url)
    prepare_connection(c)
    c.execute("CREATE TABLE tx_ledger (id bigint PRIMARY KEY, note text NOT NULL)")
    c.execute("CREATE TABLE tx_latest (id bigint PRIMARY KEY, note text NOT NULL)")
    c.execute("CREATE TABLE tx_counts (id bigint PRIMARY KEY, n bigint NOT NULL)")
    yield c
    c.close()


def events(offsets: range, note: str = "n") -> list[Event]:
    return [Event(TOPIC, 0, o, None, {"note": f"{note}{o}"}, b"{}", 0) for o in offsets]


class Recording:
    """Appends each event to tx_ledger (keyed by offset, conflicts ignored), upserts the last
    one into tx_latest, and adds 1 then 10 to tx_counts (two writes through one staging
    table); raises on the offsets in `poison`."""

    def __init__(self, poison: Sequence[int] = ()) -> None:
        self.poison = set(poison)
        self.calls = 0

    def __call__(self, batch: Sequence[Event], writer: Writer) -> None:
        self.calls += 1
        bad = [e.offset for e in batch if e.offset in self.poison]
        if bad:
            raise ValueError(f"poison at {bad}")
        rows = [(e.offset, e.value["note"]) for e in batch]
        writer.insert("tx_ledger", LEDGER, rows, on_conflict="ignore")
        writer.upsert("tx_latest", ("id",), LEDGER, rows[-1:])
        writer.accumulate("tx_counts", ("id",), ("id", "n"), [(0, 1)])
        writer.accumulate("tx_counts", ("id",), ("id", "n"), [(0, 10)])


def ctx(conn: Conn, handler: Any, catalog: TableCatalog | None = None) -> BatchContext:
    return BatchContext(conn, catalog or TableCatalog(), HandlerSpec.of(handler), GROUP)


STAGED = 0  # bind_values_max: every write goes through a staging table


@pytest.fixture(params=["bound", "staged"])
def catalog(request: pytest.FixtureRequest) -> TableCatalog:
    """Both row sources: small writes bind arrays by default, large ones stage."""
    return TableCatalog() if request.param == "bound" else TableCatalog(bind_values_max=STAGED)


def staging_tables(conn: Conn) -> int:
    found = conn.execute(
        "SELECT count(*) FROM pg_class WHERE relname LIKE '\\_eos\\_stage\\_%%' "
        "AND relpersistence = 't'"
    ).fetchone()
    assert found is not None
    return int(found[0])


def commit(c: BatchContext, items: Sequence[Event | DeadLetter]) -> CommitResult:
    """Claim the partition with its stored offset set to where `items` start, and commit."""
    start = min(i.offset for i in items) or None
    held = claim(c.conn, GROUP, "me", [(TOPIC, 0)])[(TOPIC, 0)]
    c.conn.execute(
        "UPDATE eos_offsets SET next_offset = %s WHERE consumer_group = %s", (start, GROUP)
    )
    mine = Claim(TOPIC, 0, held.epoch, start, held.owner)
    return commit_batch(c, {(TOPIC, 0): mine}, items)


def table(conn: Conn, name: str) -> list[tuple[Any, ...]]:
    return conn.execute(f"SELECT * FROM {name} ORDER BY id").fetchall()


def next_offset(conn: Conn) -> int:
    row = conn.execute("SELECT next_offset FROM eos_offsets WHERE consumer_group = %s", (GROUP,))
    found = row.fetchone()
    assert found is not None
    return int(found[0])


def test_connections_plan_each_execution_for_its_parameters(conn: Conn) -> None:
    # A generic plan made while a table was empty would be kept as the table grows.
    found = conn.execute("SHOW plan_cache_mode").fetchone()
    assert found == ("force_custom_plan",)
    assert conn.prepare_threshold is None  # so preparing statements would save only the parse


def test_batches_commit_and_reuse_one_staging_table_per_shape(conn: Conn) -> None:
    handler = Recording()
    c = ctx(conn, handler, TableCatalog(bind_values_max=STAGED))
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
    assert commit(c, events(range(0, 5))).committed == {(TOPIC, 0): 5}
    assert commit(c, events(range(5, 9))).committed == {(TOPIC, 0): 9}
    assert handler.calls == 2  # no redo: nothing failed
    assert [r[0] for r in table(conn, "tx_ledger")] == list(range(9))
    assert table(conn, "tx_latest") == [(4, "n4"), (8, "n8")]
    # Filled twice per transaction, the staging table held only the rows of each write.
    assert table(conn, "tx_counts") == [(0, 22)]
    assert staging_tables(conn) == 2  # tx_latest(id, note) and tx_counts(id, n)
    # Created by the first batch only: the second did not even ask ("already exists").
    assert not [n for n in notices if "already exists" in n]


def test_small_writes_bind_arrays_and_need_no_staging_table(conn: Conn) -> None:
    handler = Recording()
    c = ctx(conn, handler)
    assert commit(c, events(range(0, 5))).committed == {(TOPIC, 0): 5}
    assert commit(c, events(range(5, 9))).committed == {(TOPIC, 0): 9}
    assert handler.calls == 2
    assert table(conn, "tx_latest") == [(4, "n4"), (8, "n8")]
    assert table(conn, "tx_counts") == [(0, 22)]
    assert staging_tables(conn) == 0
    # Past the limit the same writes stage.
    big = ctx(conn, handler, TableCatalog(bind_values_max=1))
    assert commit(big, events(range(9, 12))).committed == {(TOPIC, 0): 12}
    assert table(conn, "tx_latest") == [(4, "n4"), (8, "n8"), (11, "n11")]
    assert table(conn, "tx_counts") == [(0, 33)]
    assert staging_tables(conn) == 2


def test_a_key_stored_before_redoes_the_batch_carefully_and_skips_it(
    conn: Conn, catalog: TableCatalog
) -> None:
    handler = Recording()
    c = ctx(conn, handler, catalog)
    commit(c, events(range(0, 6), note="old"))
    # A replay without --rebuild: offsets 3..5 are stored already, 6..8 are new.
    result = commit(c, events(range(3, 9), note="new"))
    assert result.committed == {(TOPIC, 0): 9}
    assert result.dead_letters == 0
    notes = dict(table(conn, "tx_ledger"))
    assert notes == {**{o: f"old{o}" for o in range(6)}, **{o: f"new{o}" for o in range(6, 9)}}
    assert handler.calls == 3  # first batch, the optimistic pass, the careful pass
    assert next_offset(conn) == 9


def test_a_dead_letter_stored_before_is_kept_once(conn: Conn, catalog: TableCatalog) -> None:
    c = ctx(conn, Recording(), catalog)
    letter = DeadLetter(TOPIC, 0, 2, None, b"x", (), "InvalidEvent", "first")
    commit(c, [*events(range(0, 2)), letter])
    again = DeadLetter(TOPIC, 0, 2, None, b"x", (), "InvalidEvent", "second")
    result = commit(c, [*events(range(0, 2)), again, *events(range(3, 5))])
    assert result.committed == {(TOPIC, 0): 5}
    stored = conn.execute("SELECT src_offset, error_message FROM dead_letters").fetchall()
    assert stored == [(2, "first")]
    assert [r[0] for r in table(conn, "tx_ledger")] == [0, 1, 3, 4]


def test_a_failing_event_is_isolated_after_the_retries(conn: Conn, catalog: TableCatalog) -> None:
    handler = Recording(poison=[13])
    c = ctx(conn, handler, catalog)
    result = commit(c, events(range(10, 18)))
    assert result.committed == {(TOPIC, 0): 18}
    assert result.dead_letter_classes == ("HandlerError",)
    assert [r[0] for r in table(conn, "tx_ledger")] == [10, 11, 12, 14, 15, 16, 17]
    letters = conn.execute("SELECT src_offset, error_message FROM dead_letters").fetchall()
    assert letters == [(13, "ValueError: poison at [13]")]
    # Three attempts on the whole batch (the optimistic pass is the first), then bisection:
    # 8 -> 4+4 -> (2+2) -> (1+1) = 6 more calls.
    assert handler.calls == 3 + 6


class RollsBackItsOwnDelete(Recording):
    """On its first call, deletes inside a savepoint of its own that it rolls back: the
    staging table made for the delete is gone, although the batch commits."""

    entered = 0

    def __call__(self, batch: Sequence[Event], writer: Writer) -> None:
        self.entered += 1
        if self.entered == 1:
            with writer.connection.transaction(force_rollback=True):
                writer.delete("tx_latest", ("id",), [(999,)])
        else:
            writer.delete("tx_latest", ("id",), [(999,)])
        super().__call__(batch, writer)


def test_a_staging_table_lost_to_a_rollback_is_created_again(conn: Conn) -> None:
    handler = RollsBackItsOwnDelete()
    c = ctx(conn, handler, TableCatalog(bind_values_max=STAGED))
    assert commit(c, events(range(0, 3))).committed == {(TOPIC, 0): 3}
    second = commit(c, events(range(3, 6)))
    assert second.committed == {(TOPIC, 0): 6}
    assert second.dead_letters == 0
    assert handler.entered == 3  # the second batch was redone once, carefully
    assert table(conn, "tx_latest") == [(2, "n2"), (5, "n5")]
    third = commit(c, events(range(6, 8)))
    assert third.committed == {(TOPIC, 0): 8}
    assert handler.entered == 4  # and the next batch is optimistic again
    assert table(conn, "tx_counts") == [(0, 33)]


def test_lock_and_advance_moves_only_behind_the_fence(conn: Conn) -> None:
    mine = claim(conn, GROUP, "me", [(TOPIC, 0), (TOPIC, 1)])
    targets = {(TOPIC, 0): 10, (TOPIC, 1): 20}
    with conn.transaction(), conn.cursor() as cur:
        rows, moved = lock_and_advance(cur, GROUP, list(mine.values()), targets)
    assert moved == 2
    assert {tp: (r.epoch, r.next_offset) for tp, r in rows.items()} == {
        (TOPIC, 0): (1, None),  # as locked, before the advance
        (TOPIC, 1): (1, None),
    }
    stale = {tp: c.advanced(targets[tp]) for tp, c in mine.items()}
    claim(conn, GROUP, "other", [(TOPIC, 1)])  # partition 1 changes hands
    with conn.transaction(), conn.cursor() as cur:
        rows, moved = lock_and_advance(
            cur, GROUP, list(stale.values()), {(TOPIC, 0): 11, (TOPIC, 1): 21}
        )
    assert moved == 1  # partition 0 only: partition 1's epoch is the new owner's
    assert fence_outcome(stale[(TOPIC, 1)], rows[(TOPIC, 1)]) is Outcome.LOST
    with conn.transaction(), conn.cursor() as cur:  # an offset other than the row's: refused
        _, moved = lock_and_advance(cur, GROUP, [stale[(TOPIC, 0)]], {(TOPIC, 0): 12})
    assert moved == 0
    stored = conn.execute(
        "SELECT partition, epoch, next_offset FROM eos_offsets ORDER BY partition"
    ).fetchall()
    assert stored == [(0, 1, 11), (1, 2, 20)]


def test_one_partition_advances_behind_the_same_fence(conn: Conn) -> None:
    mine = claim(conn, GROUP, "me", [(TOPIC, 0)])[(TOPIC, 0)]
    with conn.transaction(), conn.cursor() as cur:
        rows, moved = lock_and_advance(cur, GROUP, [mine], {(TOPIC, 0): 7})
    assert moved == 1
    assert rows == {(TOPIC, 0): OffsetRow(1, None, "me")}  # as locked, before the advance
    with conn.transaction(), conn.cursor() as cur:  # the offset it started from moved on
        rows, moved = lock_and_advance(cur, GROUP, [mine], {(TOPIC, 0): 8})
    assert moved == 0
    assert rows == {(TOPIC, 0): OffsetRow(1, 7, "me")}
    assert fence_outcome(mine, rows[(TOPIC, 0)]) is Outcome.RECLAIM
    claim(conn, GROUP, "other", [(TOPIC, 0)])
    with conn.transaction(), conn.cursor() as cur:  # another consumer claimed it
        rows, moved = lock_and_advance(cur, GROUP, [mine.advanced(7)], {(TOPIC, 0): 9})
    assert moved == 0
    assert fence_outcome(mine.advanced(7), rows[(TOPIC, 0)]) is Outcome.LOST
    with conn.transaction(), conn.cursor() as cur:  # a partition with no row at all
        rows, moved = lock_and_advance(
            cur, GROUP, [Claim(TOPIC, 5, 1, None, "me")], {(TOPIC, 5): 1}
        )
    assert (rows, moved) == ({}, 0)
    stored = conn.execute("SELECT partition, epoch, next_offset, owner FROM eos_offsets")
    assert stored.fetchall() == [(0, 2, 7, "other")]


def test_a_claim_waits_for_the_row_lock_of_a_commit_in_flight(
    conn: Conn, database_url: str
) -> None:
    mine = claim(conn, GROUP, "me", [(TOPIC, 0)])
    claimed = threading.Event()

    def new_owner() -> None:
        with connect(database_url) as other:
            claim(other, GROUP, "other", [(TOPIC, 0)])
        claimed.set()

    with conn.transaction(), conn.cursor() as cur:
        _, moved = lock_and_advance(cur, GROUP, list(mine.values()), {(TOPIC, 0): 5})
        thread = threading.Thread(target=new_owner)
        thread.start()
        assert not claimed.wait(0.5)  # blocked on the row this commit holds
    thread.join(10)
    assert moved == 1 and claimed.is_set()
    row = conn.execute("SELECT epoch, next_offset, owner FROM eos_offsets").fetchone()
    assert row == (2, 5, "other")  # the claim landed after the commit, on top of it


KINDS = (
    "id bigint PRIMARY KEY, b boolean, i2 smallint, i4 integer, r real, d double precision, "
    "n numeric(12,2), t text, v varchar(20), u uuid, raw bytea, day date, at_time time, "
    "naive timestamp, at timestamptz, span interval, j json, jb jsonb, "
    "code char(3), tags int[]"
)


def kinds_rows() -> list[tuple[Any, ...]]:
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    full = (
        1, True, 7, 2**31 - 1, 1.5, 2.25, Decimal("12.345"), "tëxt", "var", UUID(int=5),
        b"\x00\xff", date(2026, 1, 2), time(3, 4, 5), datetime(2026, 1, 2, 3, 4, 5), at,
        timedelta(days=1, microseconds=1), {"a": [1, 2]}, b'{"b": true}', "abc", [1, 2],
    )  # fmt: skip
    empty = (2, *([None] * (len(full) - 1)))
    mixed = (3, False, -1, 0, 0.0, -0.5, Decimal("-1"), "", "", UUID(int=0), b"", None, None,
             None, at, None, [1, "x"], {"nested": {"k": None}}, "x", None)  # fmt: skip
    return [full, empty, mixed]


def read_back(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """What PostgreSQL gives back for a row of kinds_rows()."""
    n, jb, code = row[6], row[17], row[18]
    return (
        *row[:6],
        None if n is None else n.quantize(Decimal("0.01"), ROUND_HALF_UP),  # numeric(12,2)
        *row[7:17],
        orjson.loads(jb) if isinstance(jb, bytes) else jb,  # bytes hold JSON already
        code and code.ljust(3),  # char(3) pads
        row[19],
    )


@pytest.mark.parametrize("limit", [STAGED, 10_000], ids=["staged", "bound"])
def test_every_column_type_reads_back_the_same_from_either_row_source(
    conn: Conn, limit: int
) -> None:
    conn.execute(f"CREATE TABLE tx_kinds ({KINDS})")
    columns = tuple(c.split()[0] for c in KINDS.split(", "))
    catalog = TableCatalog(bind_values_max=limit)
    # char(3) would be cut to one character cast as `character`, int[] flattened by unnest:
    # tables with such columns always stage.
    assert catalog.array_types(conn, "tx_kinds", columns) is None
    assert catalog.array_types(conn, "tx_kinds", columns[:-2]) is not None
    with conn.transaction():
        Writer(conn, catalog).upsert(
            "tx_kinds", ("id",), columns[:-2], [r[:-2] for r in kinds_rows()]
        )
        Writer(conn, catalog).upsert("tx_kinds", ("id",), ("id", "code", "tags"), [
            (r[0], *r[-2:]) for r in kinds_rows()
        ])  # fmt: skip
    stored = table(conn, "tx_kinds")
    assert stored == [read_back(row) for row in kinds_rows()]
