"""SIGINT/SIGTERM as a request to stop at the next safe point, so a batch in the middle of its
Kafka transaction is finished (or aborted) deliberately instead of torn by an exception."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Raised out of a blocking wait that `StopRequest.interruptible()` marked safe to leave."""


class StopRequest:
    """Installed as the handler of SIGINT and SIGTERM while used as a context manager."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._interruptible = False
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum
        if self._interruptible:
            raise Interrupted(signal.Signals(signum).name)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Inside this block a stop signal raises `Interrupted` at once (e.g. while blocked
        reading input); elsewhere it only sets `requested`."""
        if self.requested:
            raise Interrupted(signal.Signals(self.signal or signal.SIGINT).name)
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def __enter__(self) -> StopRequest:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
