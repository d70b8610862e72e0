"""Per-partition progress when records of one partition commit out of order (`--order key`):
the partition may only advance to the highest offset below which everything is done (the
reference's "only commit when ALL messages up to offset X are processed"). Pure."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class PartitionProgress:
    """Offsets handed out in consumption order, and which of them are committed."""

    def __init__(self, next_offset: int | None, done: Iterable[int] = ()) -> None:
        self.committed_to = next_offset  # the stored next_offset
        self._pending: deque[int] = deque()
        self._done: set[int] = set(done)

    def is_done(self, offset: int) -> bool:
        """Committed already (above the stored next_offset, before a restart)."""
        return offset in self._done

    def dispatched(self, offset: int) -> None:
        self._pending.append(offset)

    def completed(self, offsets: Iterable[int]) -> None:
        self._done.update(offsets)

    def watermark(self) -> int | None:
        """The next_offset that may be stored now: everything below it is committed."""
        mark = self.committed_to
        while self._pending and self._pending[0] in self._done:
            offset = self._pending.popleft()
            mark = offset + 1
        if mark is not None:
            self._done = {o for o in self._done if o >= mark}
        return mark

    def advanced(self, next_offset: int) -> None:
        self.committed_to = next_offset
