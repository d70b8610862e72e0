"""One batch, one transaction, against the real server. The fence statement locks and moves
only what the epoch allows; the optimistic pass (no savepoints) and the careful redo after a
failure must leave exactly what the careful path alone would."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from eos_pipeline.db import connect
from eos_pipeline.events import DeadLetter, Event
from eos_pipeline.handlers import HandlerSpec
from eos_pipeline.offsets import Claim, Outcome, claim, fence_outcome, lock_and_advance
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
    c = ctx(conn, handler)
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
    assert commit(c, events(range(0, 5))).committed == {(TOPIC, 0): 5}
    assert commit(c, events(range(5, 9))).committed == {(TOPIC, 0): 9}
    assert handler.calls == 2  # no redo: nothing failed
    assert [r[0] for r in table(conn, "tx_ledger")] == list(range(9))
    assert table(conn, "tx_latest") == [(4, "n4"), (8, "n8")]
    # Filled twice per transaction, the staging table held only the rows of each write.
    assert table(conn, "tx_counts") == [(0, 22)]
    staging = conn.execute(
        "SELECT count(*) FROM pg_class WHERE relname LIKE '\\_eos\\_stage\\_%%' "
        "AND relpersistence = 't'"
    ).fetchone()
    assert staging == (2,)  # tx_latest(id, note) and tx_counts(id, n)
    # Created by the first batch only: the second did not even ask ("already exists").
    assert not [n for n in notices if "already exists" in n]


def test_a_key_stored_before_redoes_the_batch_carefully_and_skips_it(conn: Conn) -> None:
    handler = Recording()
    c = ctx(conn, handler)
    commit(c, events(range(0, 6), note="old"))
    # A replay without --rebuild: offsets 3..5 are stored already, 6..8 are new.
    result = commit(c, events(range(3, 9), note="new"))
    assert result.committed == {(TOPIC, 0): 9}
    assert result.dead_letters == 0
    notes = dict(table(conn, "tx_ledger"))
    assert notes == {**{o: f"old{o}" for o in range(6)}, **{o: f"new{o}" for o in range(6, 9)}}
    assert handler.calls == 3  # first batch, the optimistic pass, the careful pass
    assert next_offset(conn) == 9


def test_a_dead_letter_stored_before_is_kept_once(conn: Conn) -> None:
    c = ctx(conn, Recording())
    letter = DeadLetter(TOPIC, 0, 2, None, b"x", (), "InvalidEvent", "first")
    commit(c, [*events(range(0, 2)), letter])
    again = DeadLetter(TOPIC, 0, 2, None, b"x", (), "InvalidEvent", "second")
    result = commit(c, [*events(range(0, 2)), again, *events(range(3, 5))])
    assert result.committed == {(TOPIC, 0): 5}
    stored = conn.execute("SELECT src_offset, error_message FROM dead_letters").fetchall()
    assert stored == [(2, "first")]
    assert [r[0] for r in table(conn, "tx_ledger")] == [0, 1, 3, 4]


def test_a_failing_event_is_isolated_after_the_retries(conn: Conn) -> None:
    handler = Recording(poison=[13])
    c = ctx(conn, handler)
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
    c = ctx(conn, handler)
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
