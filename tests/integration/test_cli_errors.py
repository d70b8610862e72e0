"""Bad configuration or an unreachable server: one readable line, a non-zero exit, quickly,
and never a password or a traceback."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from .support import cli


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "eos_pipeline", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return done.returncode, done.stderr, time.monotonic() - started


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_migrate_with_a_wrong_database_url(backend: object) -> None:
    code, err, _ = _run(
        "--database-url", "postgresql+psycopg://eos:s3cret-pw@127.0.0.1:1/eos", "migrate"
    )
    line = _one_line(err)
    assert code == 2
    assert "s3cret-pw" not in err and "***" in line and "cannot migrate" in line


def test_run_with_a_wrong_password(kafka_bootstrap: str, database_url: str) -> None:
    url = database_url.replace("eos:eos@", "eos:wrong-pw@")
    code, err, _ = _run(*cli(kafka_bootstrap, url, "run")[3:])
    line = _one_line(err)
    assert code == 2 and "wrong-pw" not in err and "password authentication failed" in line


def test_run_with_an_unreachable_broker(database_url: str) -> None:
    code, err, _ = _run("--bootstrap", "127.0.0.1:1", "--database-url", database_url, "run")
    line = _one_line(err)
    assert code == 2 and "cannot reach Kafka" in line


def test_run_with_a_missing_topic(kafka_bootstrap: str, database_url: str) -> None:
    code, err, _ = _run(
        *cli(kafka_bootstrap, database_url, "run", "--topic", "no-such-topic-here")[3:]
    )
    line = _one_line(err)
    assert code == 2 and "no-such-topic-here" in line and "topics create" in line


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--batch-size", "0"),
        ("run", "--handler", "no.such.module:thing"),
        ("run", "--kafka-config", "missing-equals"),
        ("run", "--workers", "0"),
    ],
)
def test_bad_values(
    kafka_bootstrap: str, database_url: str, new_topic: Callable[..., str], args: tuple[str, ...]
) -> None:
    code, err, _ = _run(*cli(kafka_bootstrap, database_url, *args)[3:])
    _one_line(err)
    assert code == 2


def test_bad_environment_value_names_the_variable(database_url: str) -> None:
    import os

    env = {**os.environ, "EOS_BATCH_SIZE": "lots"}
    code, err, _ = _run("--database-url", database_url, "run", env=env)
    line = _one_line(err)
    assert code == 2 and "EOS_BATCH_SIZE" in line
