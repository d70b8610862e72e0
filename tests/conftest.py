"""Session-wide real services, per-test isolation by names: every test gets its own database
(cloned from a migrated template) and uuid-named topics and groups."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from eos_pipeline.admin import admin_client, create_topic
from eos_pipeline.db import conninfo, parse_url
from eos_pipeline.migrate import upgrade

from .backends import Backend, BackendUnavailable, choose_backend

_backend: Backend | None = None
_backend_error: str | None = None


def _get_backend() -> Backend | None:
    global _backend, _backend_error
    if _backend is None and _backend_error is None:
        try:
            _backend = choose_backend()
        except BackendUnavailable as exc:
            _backend_error = str(exc)
            if os.environ.get("CI") == "true":
                raise pytest.UsageError(
                    f"CI=true but no real Kafka/PostgreSQL could be had: {exc}"
                ) from exc
    return _backend


def pytest_report_header(config: pytest.Config) -> list[str]:
    backend = _get_backend()
    if backend is None:
        return [f"eos backend: NONE ({_backend_error}); integration tests will be skipped"]
    return [
        f"eos backend: {backend.name}: Kafka {backend.kafka_bootstrap}, "
        f"PostgreSQL {parse_url(backend.database_url).render_as_string(hide_password=True)}"
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _backend is not None:
        _backend.close()


@pytest.fixture(scope="session")
def backend() -> Backend:
    b = _get_backend()
    if b is None:
        pytest.skip(f"no real Kafka/PostgreSQL: {_backend_error}")
    return b


@pytest.fixture(scope="session")
def kafka_bootstrap(backend: Backend) -> str:
    return backend.kafka_bootstrap


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _with_database(url: str, name: str) -> str:
    return parse_url(url).set(database=name).render_as_string(hide_password=False)


def _admin_sql(url: str, sql: str) -> None:
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(sql.encode())


@pytest.fixture(scope="session")
def template_database(backend: Backend) -> Iterator[str]:
    """A database migrated to head once; each test's database is a copy of it."""
    name = f"eos_tmpl_{uuid.uuid4().hex[:8]}"
    _admin_sql(backend.database_url, f'CREATE DATABASE "{name}"')
    upgrade(_with_database(backend.database_url, name))
    yield name
    _admin_sql(backend.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database_url(backend: Backend) -> Iterator[str]:
    name = f"eos_t_{uuid.uuid4().hex[:10]}"
    _admin_sql(backend.database_url, f'CREATE DATABASE "{name}"')
    yield _with_database(backend.database_url, name)
    _admin_sql(backend.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(backend: Backend, template_database: str) -> Iterator[str]:
    """A fresh database at the newest schema, for this test alone."""
    name = f"eos_t_{uuid.uuid4().hex[:10]}"
    _admin_sql(backend.database_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield _with_database(backend.database_url, name)
    _admin_sql(backend.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
        yield conn


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> Callable[..., str]:
    """Creates a uniquely named topic: new_topic(partitions=3)."""
    admin = admin_client(kafka_bootstrap)

    def make(partitions: int = 1, prefix: str = "t") -> str:
        name = unique(prefix)
        create_topic(admin, name, partitions)
        return name

    return make


@pytest.fixture
def group_id() -> str:
    return unique("g")
