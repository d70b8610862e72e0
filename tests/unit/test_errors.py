"""Error classification: which database errors are worth a retry; what errors carry."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pg_errors

from eos_pipeline.errors import (
    ConfigError,
    ConnectionFailed,
    DatabaseTransient,
    DatabaseUnavailable,
    EosError,
    HandlerError,
    PartitionFenced,
    TransientError,
    UnknownView,
    database_errors,
    is_transient,
)


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.InterfaceError("the connection is closed"),
        pg_errors.SerializationFailure("could not serialize access"),
        pg_errors.DeadlockDetected("deadlock detected"),
        pg_errors.AdminShutdown("terminating connection due to administrator command"),
        pg_errors.ConnectionFailure("connection failure"),
        pg_errors.CannotConnectNow("the database system is starting up"),
    ],
    ids=type,
)
def test_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        pg_errors.UniqueViolation("duplicate key value violates unique constraint"),
        pg_errors.UndefinedTable('relation "nope" does not exist'),
        pg_errors.QueryCanceled("canceling statement due to statement timeout"),
        pg_errors.DiskFull("could not extend file"),  # an OperationalError, but SQLSTATE 53100
        psycopg.ProgrammingError("syntax error"),
        ValueError("not a database error"),
    ],
    ids=type,
)
def test_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_sqlstates_of_the_fixtures() -> None:
    # Guards the cases above: they are what their names say.
    assert pg_errors.SerializationFailure.sqlstate == "40001"
    assert pg_errors.DeadlockDetected.sqlstate == "40P01"
    assert pg_errors.UniqueViolation.sqlstate == "23505"
    assert issubclass(pg_errors.DiskFull, psycopg.OperationalError)


def test_database_errors_turns_transient_errors_into_retryable_ones() -> None:
    with (
        pytest.raises(DatabaseTransient, match="committing batch: could not serialize") as info,
        database_errors("committing batch"),
    ):
        raise pg_errors.SerializationFailure("could not serialize access\nDETAIL: more")
    assert isinstance(info.value, TransientError)
    assert isinstance(info.value.__cause__, pg_errors.SerializationFailure)
    assert info.value.retry_after == 0.5


def test_database_errors_lets_permanent_errors_through() -> None:
    with pytest.raises(pg_errors.UniqueViolation), database_errors("insert"):
        raise pg_errors.UniqueViolation("duplicate key")


def test_database_errors_leaves_own_errors_alone() -> None:
    fenced = PartitionFenced([("orders", 1)])
    with pytest.raises(PartitionFenced) as info, database_errors("commit"):
        raise fenced
    assert info.value is fenced


def test_database_errors_passes_when_nothing_fails() -> None:
    with database_errors("noop"):
        value = 1
    assert value == 1


def test_partition_fenced_carries_its_partitions() -> None:
    exc = PartitionFenced([("orders", 0), ("payments", 3)])
    assert exc.partitions == (("orders", 0), ("payments", 3))
    assert "orders[0]" in str(exc)
    assert "payments[3]" in str(exc)
    assert isinstance(exc, EosError)


def test_handler_error_carries_its_events() -> None:
    exc = HandlerError("boom", events=["e1", "e2"])
    assert exc.events == ("e1", "e2")
    assert HandlerError("boom").events == ()


def test_hierarchy_and_exit_codes() -> None:
    assert EosError("x").exit_code == 1
    assert ConfigError("x").exit_code == 2
    assert UnknownView("x").exit_code == 2
    assert DatabaseUnavailable("x").exit_code == 2
    assert issubclass(DatabaseUnavailable, ConnectionFailed)
    assert issubclass(DatabaseTransient, TransientError)
    assert TransientError("x", retry_after=3.0).retry_after == 3.0
