"""Where the benchmarks and the chaos harness run: the shared stack's addresses, throw-away
databases and topics on it, and private stacks whose servers the harness may restart."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from eos_pipeline.admin import admin_client, create_topic
from eos_pipeline.config import Settings, load_settings
from eos_pipeline.db import conninfo, parse_url
from eos_pipeline.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
DEVSTACK = ROOT / "scripts" / "devstack"


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def child_env() -> dict[str, str]:
    """Children import `benchmarks` (probe handler, workers) from the repository root."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


def eos_command(bootstrap: str, database_url: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "eos_pipeline",
        "--bootstrap",
        bootstrap,
        "--database-url",
        database_url,
        *args,
    ]


def pipeline_command(
    bootstrap: str, database_url: str, topic: str, group: str, batch: int, *extra: str
) -> list[str]:
    """`run` on one topic and group until it has been idle for a moment."""
    return eos_command(
        bootstrap,
        database_url,
        *("run", "--topic", topic, "--group", group, "--batch-size", str(batch)),
        *("--exit-when-idle", "2"),
        *extra,
    )


def with_database(url: str, name: str) -> str:
    return parse_url(url).set(database=name).render_as_string(hide_password=False)


def admin_sql(url: str, statement: str) -> None:
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(statement.encode())


@dataclass
class Stack:
    """A Kafka broker and a PostgreSQL server; databases and topics made here are dropped by
    `close` (topics stay: names are unique and the broker is a test broker)."""

    bootstrap: str
    database_url: str
    _template: str | None = None
    _databases: list[str] = field(default_factory=list)

    @classmethod
    def from_environment(cls) -> Stack:
        settings: Settings = load_settings(None)
        return cls(settings.kafka_bootstrap, settings.database_url)

    def topic(self, partitions: int, prefix: str = "bench") -> str:
        name = unique(prefix).replace("_", "-")
        create_topic(admin_client(self.bootstrap), name, partitions)
        return name

    def fresh_database(self) -> str:
        """A new database at the newest schema (copied from a template migrated once)."""
        if self._template is None:
            self._template = unique("eos_bench_tmpl")
            admin_sql(self.database_url, f'CREATE DATABASE "{self._template}"')
            self._databases.append(self._template)
            upgrade(with_database(self.database_url, self._template))
        name = unique("eos_bench")
        admin_sql(self.database_url, f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
        self._databases.append(name)
        return with_database(self.database_url, name)

    def drop(self, url: str) -> None:
        name = parse_url(url).database or ""
        admin_sql(self.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self._databases:
            self._databases.remove(name)

    def close(self) -> None:
        for name in reversed(self._databases):
            admin_sql(self.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._databases.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateStack:
    """A broker and a server of our own (the devstack script in its own directory and ports),
    so restarting them disturbs nobody. The directory sits under /var/tmp, where the postgres
    user can reach it; Kafka's jars are linked from the shared devstack when it has them."""

    def __init__(self) -> None:
        self.dir = Path(f"/var/tmp/eos-chaos-{uuid.uuid4().hex[:10]}")
        self.kafka_port = free_port()
        self.pg_port = free_port()
        self.env = {
            **os.environ,
            "EOS_DEVSTACK_DIR": str(self.dir),
            "EOS_DEVSTACK_KAFKA_PORT": str(self.kafka_port),
            "EOS_DEVSTACK_KAFKA_CONTROLLER_PORT": str(free_port()),
            "EOS_DEVSTACK_PG_PORT": str(self.pg_port),
            "EOS_DEVSTACK_DOCKER": "0",
        }
        self.bootstrap = f"127.0.0.1:{self.kafka_port}"
        self.database_url = f"postgresql+psycopg://eos:eos@127.0.0.1:{self.pg_port}/eos"

    def run(self, command: str, timeout: float = 180) -> None:
        done = subprocess.run(
            [str(DEVSTACK), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"devstack {command} failed: {done.stderr[-2000:]}")

    def up(self) -> None:
        self.dir.mkdir(parents=True)
        shared_jars = ROOT / ".devstack" / "kafka-libs"
        if (shared_jars / ".complete").exists():
            (self.dir / "kafka-libs").symlink_to(shared_jars, target_is_directory=True)
        self.run("up")
        upgrade(self.database_url)

    def down(self) -> None:
        """Stop both servers and remove the directory, whatever state they are in."""
        try:
            self.run("down")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def private_stack() -> Iterator[PrivateStack]:
    stack = PrivateStack()
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def sum_offsets(database_url: str, group: str) -> int:
    """Messages a group has committed: the sum of its stored next offsets."""
    with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM eos_offsets WHERE consumer_group = %s",
            (group,),
        ).fetchone()
    return int(row[0]) if row else 0


def flags(name: str, values: Sequence[str]) -> list[str]:
    """`--name v` for each value (repeatable options such as --kafka-config)."""
    return [a for v in values for a in (name, v)]
