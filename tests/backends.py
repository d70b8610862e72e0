"""Which real Kafka broker and PostgreSQL server the tests use, chosen once per session:

1. EOS_TEST_KAFKA_BOOTSTRAP / EOS_TEST_DATABASE_URL when set;
2. testcontainers when a Docker engine answers;
3. the project's devstack (`scripts/devstack up`, jars from Maven Central, Debian's PostgreSQL).

With CI=true and none of them reachable the session fails loudly: integration tests are never
skipped quietly.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Backend:
    name: str
    kafka_bootstrap: str
    database_url: str
    _containers: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for c in self._containers:
            c.stop()


class BackendUnavailable(RuntimeError):
    pass


def _docker_answers() -> bool:
    if os.environ.get("EOS_TEST_DOCKER", "1") == "0" or not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _port_open(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
            return True
    except OSError:
        return False


def _from_env() -> Backend | None:
    kafka = os.environ.get("EOS_TEST_KAFKA_BOOTSTRAP")
    db = os.environ.get("EOS_TEST_DATABASE_URL")
    if not (kafka or db):
        return None
    if not (kafka and db):
        raise BackendUnavailable("set both EOS_TEST_KAFKA_BOOTSTRAP and EOS_TEST_DATABASE_URL")
    return Backend("environment (EOS_TEST_*)", kafka, db)


def _from_testcontainers() -> Backend:
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.postgres import PostgresContainer

    kafka = KafkaContainer("apache/kafka:4.1.1").with_kraft()
    for key, value in {
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": "1000",
    }.items():
        kafka.with_env(key, value)
    pg = PostgresContainer(
        "postgres:17", username="eos", password="eos", dbname="eos", driver="psycopg"
    )
    kafka.start()
    pg.start()
    url = pg.get_connection_url()
    return Backend("testcontainers", kafka.get_bootstrap_server(), url, [kafka, pg])


def _from_devstack() -> Backend:
    script = ROOT / "scripts" / "devstack"
    env = {**os.environ, "EOS_DEVSTACK_DOCKER": "0"}
    up = subprocess.run([str(script), "up"], capture_output=True, text=True, env=env)
    if up.returncode != 0:
        raise BackendUnavailable(f"scripts/devstack up failed:\n{up.stderr[-3000:]}")
    exports = subprocess.run(
        [str(script), "env"], capture_output=True, text=True, env=env, check=True
    ).stdout
    values = dict(
        line.removeprefix("export ").split("=", 1) for line in exports.splitlines() if "=" in line
    )
    return Backend("devstack", values["EOS_KAFKA_BOOTSTRAP"], values["EOS_DATABASE_URL"])


def choose_backend() -> Backend:
    backend = _from_env()
    if backend is None:
        backend = _from_testcontainers() if _docker_answers() else _from_devstack()
    if not _port_open(backend.kafka_bootstrap.split(",")[0]):
        raise BackendUnavailable(f"Kafka does not answer at {backend.kafka_bootstrap}")
    return backend
