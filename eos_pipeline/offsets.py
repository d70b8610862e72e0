"""The offsets store: `eos_offsets` rows, one per (group, topic, partition).

A consumer *claims* a partition by bumping its epoch and naming itself owner; a commit then
only lands while the row still carries that epoch and the offset the committer started from.
Whoever claims later fences everyone before. `fence_outcome` is the pure decision.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import psycopg

from .errors import database_errors
from .events import TopicPartition

# Replay marks the rows it resets with an owner starting with this; a running consumer fenced
# by such a reset re-claims the partition instead of giving it up.
REPLAY_OWNER_PREFIX = "replay:"


@dataclass(frozen=True, slots=True)
class Claim:
    """What this consumer holds for a partition: its epoch and the offset it continues from."""

    topic: str
    partition: int
    epoch: int
    next_offset: int | None
    owner: str

    @property
    def key(self) -> TopicPartition:
        return (self.topic, self.partition)

    def advanced(self, next_offset: int) -> Claim:
        return Claim(self.topic, self.partition, self.epoch, next_offset, self.owner)


@dataclass(frozen=True, slots=True)
class OffsetRow:
    epoch: int
    next_offset: int | None
    owner: str | None


class Outcome(enum.Enum):
    OWNED = "owned"  # epoch and offset as expected: commit
    RECLAIM = "reclaim"  # moved by a replay or by ourselves: claim again, restart from the row
    LOST = "lost"  # another consumer owns it now: stop, never commit for it


def fence_outcome(claim: Claim, row: OffsetRow | None, check_offset: bool = True) -> Outcome:
    """Decide whether a commit for `claim` may proceed, given the row as locked now. Without
    check_offset only the epoch counts (`--order key`: next_offset moves under the workers)."""
    if row is None:
        return Outcome.RECLAIM
    if row.epoch == claim.epoch:
        if not check_offset or row.next_offset == claim.next_offset:
            return Outcome.OWNED
        return Outcome.RECLAIM
    if row.owner == claim.owner or (row.owner or "").startswith(REPLAY_OWNER_PREFIX):
        return Outcome.RECLAIM
    return Outcome.LOST


Conn = psycopg.Connection[tuple[object, ...]]
Cursor = psycopg.Cursor[tuple[object, ...]]

_CLAIM_SQL = """
INSERT INTO eos_offsets AS o (consumer_group, topic, partition, next_offset, epoch, owner)
SELECT %(group)s, t, p, NULL, 1, %(owner)s
FROM unnest(%(topics)s::text[], %(partitions)s::int[]) WITH ORDINALITY AS u(t, p, n)
ORDER BY n
ON CONFLICT (consumer_group, topic, partition) DO UPDATE
   SET epoch = o.epoch + 1, owner = EXCLUDED.owner, updated_at = now()
RETURNING topic, partition, next_offset, epoch
"""

_READ_SQL = """
SELECT topic, partition, epoch, next_offset, owner FROM eos_offsets
WHERE consumer_group = %(group)s
  AND (topic, partition) IN (SELECT * FROM unnest(%(topics)s::text[], %(partitions)s::int[]))
ORDER BY topic, partition
"""


def _split(tps: Iterable[TopicPartition]) -> tuple[list[str], list[int]]:
    ordered = sorted(tps)
    return [t for t, _ in ordered], [p for _, p in ordered]


def claim(
    conn: Conn,
    group: str,
    owner: str,
    tps: Sequence[TopicPartition],
    done: dict[TopicPartition, set[int]] | None = None,
) -> dict[TopicPartition, Claim]:
    """Claim partitions in one short transaction, rows touched in a fixed order. Given a
    `done` dict, it is filled with the offsets committed above next_offset, read in the same
    transaction. A lost connection becomes DatabaseTransient, which the pipeline retries."""
    topics, partitions = _split(tps)
    with database_errors("claim partitions"), conn.transaction(), conn.cursor() as cur:
        cur.execute(
            _CLAIM_SQL,
            {"group": group, "owner": owner, "topics": topics, "partitions": partitions},
        )
        rows = cur.fetchall()
        if done is not None:
            done.update(done_offsets(cur, group, tps))
    claims: dict[TopicPartition, Claim] = {}
    for topic, partition, next_offset, epoch in rows:
        c = Claim(str(topic), int(partition), int(epoch), _opt_int(next_offset), owner)  # type: ignore[call-overload]
        claims[c.key] = c
    return claims


def lock_rows(
    cur: Cursor, group: str, tps: Iterable[TopicPartition], lock: str | None = "UPDATE"
) -> dict[TopicPartition, OffsetRow]:
    """Lock the offsets rows of a commit (fixed order) and read them as they are now. FOR
    SHARE lets several workers commit for one partition (`--order key`) while still blocking
    a new owner's claim; lock=None just reads (the idle check for replays)."""
    topics, partitions = _split(tps)
    query = _READ_SQL + (f"FOR {lock}" if lock in ("UPDATE", "SHARE") else "")
    cur.execute(query, {"group": group, "topics": topics, "partitions": partitions})
    return {
        (str(t), int(p)): OffsetRow(int(e), _opt_int(n), _opt_str(o))  # type: ignore[call-overload]
        for t, p, e, n, o in cur.fetchall()
    }


def _advance_params(
    group: str, claims: Sequence[Claim], targets: Mapping[TopicPartition, int]
) -> dict[str, object]:
    ordered = sorted(claims, key=lambda c: c.key)
    return {
        "group": group,
        "topics": [c.topic for c in ordered],
        "partitions": [c.partition for c in ordered],
        "epochs": [c.epoch for c in ordered],
        "expected": [c.next_offset for c in ordered],
        "targets": [targets[c.key] for c in ordered],
    }


# The fence and the advance in one statement. `locked` takes the row locks in a fixed order;
# the UPDATE only reaches rows through `locked`, so it never locks a row of its own, and it
# moves a partition only while the row, as locked, still carries the committer's epoch and
# expected offset. The rows come back as they were locked, each with whether it moved.
_LOCK_AND_ADVANCE_SQL = """
WITH v AS (
    SELECT * FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(epochs)s::bigint[],
                         %(expected)s::bigint[], %(targets)s::bigint[])
         AS v(topic, partition, epoch, expected, new_offset)
), locked AS (
    SELECT o.topic, o.partition, o.epoch, o.next_offset, o.owner FROM eos_offsets o
    WHERE o.consumer_group = %(group)s
      AND (o.topic, o.partition) IN (SELECT topic, partition FROM v)
    ORDER BY o.topic, o.partition
    FOR UPDATE
), moved AS (
    UPDATE eos_offsets AS o SET next_offset = v.new_offset, updated_at = now()
    FROM locked l JOIN v ON v.topic = l.topic AND v.partition = l.partition
    WHERE o.consumer_group = %(group)s AND o.topic = l.topic AND o.partition = l.partition
      AND l.epoch = v.epoch AND l.next_offset IS NOT DISTINCT FROM v.expected
    RETURNING o.topic, o.partition
)
SELECT l.topic, l.partition, l.epoch, l.next_offset, l.owner,
       EXISTS (SELECT 1 FROM moved m WHERE m.topic = l.topic AND m.partition = l.partition)
FROM locked l ORDER BY l.topic, l.partition
"""


# A batch of one partition (what a worker serving one partition commits): one row, so no lock
# order to keep, and a plain UPDATE whose WHERE clause is the fence costs the server ~0.1 ms
# against ~0.45 ms for the statement above (mostly planning). Only when it refuses does the
# statement above run, to lock the row and report it as it is.
_ADVANCE_ONE_SQL = """
UPDATE eos_offsets SET next_offset = %(target)s, updated_at = now()
WHERE consumer_group = %(group)s AND topic = %(topic)s AND partition = %(partition)s
  AND epoch = %(epoch)s AND next_offset IS NOT DISTINCT FROM %(expected)s
RETURNING epoch, owner
"""


def lock_and_advance(
    cur: Cursor, group: str, claims: Sequence[Claim], targets: Mapping[TopicPartition, int]
) -> tuple[dict[TopicPartition, OffsetRow], int]:
    """Lock the rows (fixed order) and move each partition to its target behind the fence, in
    one statement: returns the rows as locked and how many moved. The caller checks the rows
    with `fence_outcome` and rolls back if the fence refuses."""
    if len(claims) == 1:
        c = claims[0]
        cur.execute(
            _ADVANCE_ONE_SQL,
            {
                "target": targets[c.key],
                "group": group,
                "topic": c.topic,
                "partition": c.partition,
                "epoch": c.epoch,
                "expected": c.next_offset,
            },
        )
        found = cur.fetchone()
        if found is not None:  # locked and moved: as locked, it held the expected offset
            epoch, owner = found
            return {c.key: OffsetRow(int(epoch), c.next_offset, _opt_str(owner))}, 1  # type: ignore[call-overload]
    cur.execute(_LOCK_AND_ADVANCE_SQL, _advance_params(group, claims, targets))
    rows: dict[TopicPartition, OffsetRow] = {}
    moved = 0
    for t, p, e, n, o, advanced in cur.fetchall():
        rows[(str(t), int(p))] = OffsetRow(int(e), _opt_int(n), _opt_str(o))  # type: ignore[call-overload]
        moved += bool(advanced)
    return rows, moved


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


_DONE_SQL = """
SELECT topic, partition, src_offset FROM eos_done_offsets
WHERE consumer_group = %(group)s
  AND (topic, partition) IN (SELECT * FROM unnest(%(topics)s::text[], %(partitions)s::int[]))
"""


def done_offsets(
    cur: Cursor, group: str, tps: Iterable[TopicPartition]
) -> dict[TopicPartition, set[int]]:
    """Offsets committed above each partition's next_offset (`--order key`)."""
    topics, partitions = _split(tps)
    cur.execute(_DONE_SQL, {"group": group, "topics": topics, "partitions": partitions})
    out: dict[TopicPartition, set[int]] = {}
    for t, p, o in cur.fetchall():
        out.setdefault((str(t), int(p)), set()).add(int(o))  # type: ignore[call-overload]
    return out


def mark_done(cur: Cursor, group: str, offsets: Mapping[TopicPartition, Sequence[int]]) -> None:
    """Record handled offsets in the batch's transaction (instead of advancing next_offset)."""
    rows = [(group, t, p, o) for (t, p), offs in sorted(offsets.items()) for o in offs]
    with cur.copy(
        "COPY eos_done_offsets (consumer_group, topic, partition, src_offset) FROM STDIN"
    ) as copy:
        for row in rows:
            copy.write_row(row)


def advance_watermark(conn: Conn, group: str, c: Claim, next_offset: int) -> bool:
    """Move a partition's next_offset up to its watermark and forget the done rows below, in
    one short transaction behind the fence; False when the fence refused it."""
    with database_errors("advance watermark"), conn.transaction(), conn.cursor() as cur:
        rows, moved = lock_and_advance(cur, group, [c], {c.key: next_offset})
        if fence_outcome(c, rows.get(c.key)) is not Outcome.OWNED or moved != 1:
            return False
        cur.execute(
            "DELETE FROM eos_done_offsets WHERE consumer_group = %s AND topic = %s "
            "AND partition = %s AND src_offset < %s",
            (group, c.topic, c.partition, next_offset),
        )
    return True
