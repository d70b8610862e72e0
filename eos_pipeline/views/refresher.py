"""The background refresher that `run` starts: refreshes materialized views by their policies.

It owns one autocommit connection in its own thread and never touches the ingest transaction;
the pipeline only calls `batch_committed()` after each commit, which bumps a counter and sets an
Event. A failing refresh is logged and retried with exponential backoff; it never stops the
thread. Incremental and manual views are not its business.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from ..config import Settings
from ..db import connect, reason
from .definitions import MaterializedView, RefreshPolicy, ViewDefinition
from .materialized import refresh_view
from .registry import load_registry, modules_from_env

log = logging.getLogger("eos_pipeline.views")

Connect = Callable[..., psycopg.Connection[Any]]


def is_due(policy: RefreshPolicy, *, since_last_s: float, batches_since: int) -> bool:
    """Due once either threshold of the policy is reached; a manual policy never is."""
    if policy.every_batches is not None and batches_since >= policy.every_batches:
        return True
    return policy.every_seconds is not None and since_last_s >= policy.every_seconds


def backoff_delay(failures: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait after the n-th consecutive failure: base, 2x base, 4x base... capped."""
    if failures <= 0:
        return 0.0
    return float(min(cap_s, base_s * 2 ** min(failures - 1, 30)))


@dataclass
class _Schedule:
    """One view's refresh bookkeeping, touched only by the refresher thread."""

    view: MaterializedView
    last_at: float
    batches_at_last: int
    failures: int = 0
    retry_at: float = 0.0

    def next_wakeup(self, now: float) -> float:
        """The latest moment the thread must look again (batches wake it through the Event)."""
        if self.failures:
            return max(now, self.retry_at)
        every_s = self.view.refresh.every_seconds
        return float("inf") if every_s is None else max(now, self.last_at + every_s)


class ViewRefresher:
    """Refreshes `views` (materialized, non-manual policy) in a daemon thread."""

    def __init__(
        self,
        database_url: str,
        views: Sequence[ViewDefinition],
        *,
        poll_interval_s: float = 1.0,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 60.0,
        connect: Connect = connect,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = database_url
        self._views = tuple(
            v for v in views if isinstance(v, MaterializedView) and not v.refresh.manual
        )
        self._poll_s = poll_interval_s
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._connect = connect
        self._clock = clock
        self._batches = 0
        self._batches_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def views(self) -> tuple[MaterializedView, ...]:
        return self._views

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("ViewRefresher.start() called twice")
        self._thread = threading.Thread(target=self._loop, name="eos-view-refresher", daemon=True)
        self._thread.start()

    def batch_committed(self, count: int = 1) -> None:
        """Called by the pipeline after each committed batch: cheap and never blocking."""
        with self._batches_lock:
            self._batches += count
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread, waiting at most about `timeout_s` + 2 s: a refresh still running
        after `timeout_s` is cancelled on the server (its transaction rolls back)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is None:
            return
        self._thread.join(timeout_s)
        conn = self._conn
        if self._thread.is_alive() and conn is not None:
            log.warning("view refresh still running after %.0f s: cancelling it", timeout_s)
            conn.cancel_safe(timeout=2.0)
            self._thread.join(2.0)
        if self._thread.is_alive():
            log.warning("view refresher thread did not stop; it is a daemon and dies with us")

    def _batch_count(self) -> int:
        with self._batches_lock:
            return self._batches

    def _loop(self) -> None:
        schedules = [_Schedule(v, self._clock(), 0) for v in self._views]
        try:
            while not self._stopping.is_set():
                for schedule in schedules:
                    if self._stopping.is_set():
                        break
                    self._maybe_refresh(schedule)
                now = self._clock()
                wakeup = min((s.next_wakeup(now) for s in schedules), default=float("inf"))
                self._wake.wait(min(self._poll_s, wakeup - now))
                self._wake.clear()
        finally:
            self._close()

    def _maybe_refresh(self, schedule: _Schedule) -> None:
        now = self._clock()
        batches = self._batch_count()
        due = is_due(
            schedule.view.refresh,
            since_last_s=now - schedule.last_at,
            batches_since=batches - schedule.batches_at_last,
        )
        if not due or now < schedule.retry_at:
            return
        try:
            result = refresh_view(self._connection(), schedule.view)
        except Exception as exc:
            self._failed(schedule, exc)
            return
        if result is None:
            log.debug("view %s is being refreshed by another session", schedule.view.name)
        else:
            log.info("refreshed view %s in %.0f ms", result.view, result.duration_s * 1000)
        schedule.last_at, schedule.batches_at_last = now, batches
        schedule.failures, schedule.retry_at = 0, 0.0

    def _failed(self, schedule: _Schedule, exc: Exception) -> None:
        schedule.failures += 1
        delay = backoff_delay(schedule.failures, *self._backoff)
        schedule.retry_at = self._clock() + delay
        log.warning(
            "refresh of view %s failed (%d in a row), retrying in %.1f s: %s",
            schedule.view.name,
            schedule.failures,
            delay,
            reason(exc),
        )
        if self._conn is not None and self._conn.broken:
            self._close()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect(self._url, application_name="eos-view-refresher")
        return self._conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def refresher_from_settings(
    settings: Settings, modules: Sequence[str] | None = None, **options: Any
) -> ViewRefresher:
    """The refresher for `run`: built-in views plus those of `modules` (default: the modules
    named by EOS_VIEWS_MODULES); `options` go to ViewRefresher."""
    registry = load_registry(modules_from_env() if modules is None else modules)
    return ViewRefresher(settings.database_url, tuple(registry), **options)
