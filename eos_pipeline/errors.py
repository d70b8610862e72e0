"""Every error this project raises, under one root.

    EosError                     anything eos-pipeline reports; its message says what to do
    ├── ConfigError              a bad setting or argument (exit code 2)
    │   └── UnknownView          a view name no registered definition has
    ├── ConnectionFailed         a server could not be reached (exit code 2 at start-up)
    │   ├── DatabaseUnavailable
    │   └── KafkaUnavailable
    ├── TransientError           worth retrying after a backoff: the run loop does so
    │   └── DatabaseTransient    connection lost, serialization failure, deadlock
    ├── PartitionFenced          another owner claimed the partition (carries the partitions)
    ├── ProducerFenced           a newer producer with the same transactional.id took over
    ├── TransactionAborted       a Kafka transaction was aborted: rewind and redo its batch
    ├── KafkaError               a Kafka operation failed for good
    ├── HandlerError             a handler raised; carries the failing events
    └── ViewError                a view is missing from the database or cannot be refreshed

Errors of psycopg and confluent-kafka are translated at the boundary by `database_errors()`
so callers only ever catch these.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors


class EosError(Exception):
    """Root of every error raised by eos-pipeline."""

    exit_code = 1


class ConfigError(EosError):
    exit_code = 2


class UnknownView(ConfigError):
    """A view name that neither the built-in views nor the given view modules declare."""


class ConnectionFailed(EosError):
    exit_code = 2


class DatabaseUnavailable(ConnectionFailed):
    pass


class KafkaUnavailable(ConnectionFailed):
    pass


class TransientError(EosError):
    """A failure expected to heal by itself; `retry_after` hints the first backoff."""

    def __init__(self, message: str, retry_after: float = 0.5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DatabaseTransient(TransientError):
    pass


class PartitionFenced(EosError):
    """The epoch fence rejected a commit: these partitions belong to someone else now."""

    def __init__(self, partitions: Sequence[tuple[str, int]]) -> None:
        names = ", ".join(f"{t}[{p}]" for t, p in partitions)
        super().__init__(f"fenced: partitions {names} were claimed by another owner")
        self.partitions = tuple(partitions)


class ProducerFenced(EosError):
    pass


class TransactionAborted(EosError):
    """The producer aborted its open transaction (librdkafka's `txn_requires_abort`): nothing
    of the batch is visible, so the caller rewinds its input to the batch start and redoes it
    with the same, still usable, producer."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class KafkaError(EosError):
    pass


class HandlerError(EosError):
    def __init__(self, message: str, events: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.events = tuple(events)


class ViewError(EosError):
    """A declared view is not in the database (its migration has not run) or is unusable."""


# SQLSTATE classes worth a retry: connection exceptions, serialization failure, deadlock,
# operator intervention (admin shutdown, crash shutdown, cannot connect now).
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "40", "57P")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        sqlstate = getattr(exc, "sqlstate", None)
        return sqlstate is None or sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
    if isinstance(exc, pg_errors.SerializationFailure | pg_errors.DeadlockDetected):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES)


@contextmanager
def database_errors(what: str) -> Iterator[None]:
    """Translate psycopg errors into this project's: transient ones become retryable."""
    try:
        yield
    except EosError:
        raise
    except psycopg.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if is_transient(exc):
            raise DatabaseTransient(f"{what}: {detail}") from exc
        raise
