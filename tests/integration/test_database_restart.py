"""PostgreSQL restarted under a running pipeline: it reconnects, re-claims its partitions,
resumes from the stored offsets, and exactly-once holds. The server restarted here is a
private one (the devstack's script, its own directory and port), never the shared one."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eos_pipeline.audit import read_topic
from eos_pipeline.migrate import upgrade

from .support import (
    ROOT,
    PipelineProcess,
    check_exactly_once,
    free_port,
    start_producer,
    wait_caught_up,
)


class PrivatePostgres:
    def __init__(self) -> None:
        self.dir = Path(f"/var/tmp/eos-test-{uuid.uuid4().hex[:10]}")
        self.port = free_port()
        self.env = {
            **os.environ,
            "EOS_DEVSTACK_DIR": str(self.dir),
            "EOS_DEVSTACK_PG_PORT": str(self.port),
            "EOS_DEVSTACK_DOCKER": "0",
        }
        self.url = f"postgresql+psycopg://eos:eos@127.0.0.1:{self.port}/eos"

    def run(self, command: str) -> None:
        done = subprocess.run(
            [str(ROOT / "scripts" / "devstack"), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but PostgreSQL's server binaries are missing")
        pytest.skip("needs Debian's PostgreSQL server binaries for a private server")
    pg = PrivatePostgres()
    pg.run("up-pg")
    try:
        upgrade(pg.url)
        yield pg
    finally:
        pg.run("down-pg")
        shutil.rmtree(pg.dir, ignore_errors=True)


@pytest.mark.parametrize(
    ("stop", "extra"),
    [("down-pg", ()), ("crash-pg", ("--async-commit",))],
    ids=["restart", "crash-with-async-commit"],
)
def test_postgres_restarts_mid_run(
    kafka_bootstrap: str,
    private_postgres: PrivatePostgres,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
    stop: str,
    extra: tuple[str, ...],
) -> None:
    """A clean restart; and a crash (immediate stop: unflushed WAL is lost) under
    --async-commit, where the last commits vanish with their offsets and are redone."""
    topic = new_topic(partitions=3)
    url = private_postgres.url
    pipeline = PipelineProcess(kafka_bootstrap, url, topic, group_id, tmp_path, *extra).start()
    restarts = 0
    try:
        # Start-up validates the server once (an unreachable one is a start-up error, exit 2);
        # the restarts begin once the pipeline is running.
        deadline = time.monotonic() + 30
        while "assigned" not in pipeline.logs():
            assert time.monotonic() < deadline and pipeline.running, pipeline.logs()
            time.sleep(0.2)
        for round_ in range(3):
            # Data keeps flowing while the server goes away and comes back.
            feeder = start_producer(
                kafka_bootstrap, topic, 2000, seed=51 + round_, poison_rate=0.02, batch_size=50
            )
            time.sleep(1.0)
            private_postgres.run(stop)
            time.sleep(2.0)  # unreachable for a while: the pipeline retries with backoff
            assert pipeline.running, pipeline.logs()
            private_postgres.run("up-pg")
            restarts += 1
            assert feeder.wait(120) == 0
        wait_caught_up(
            url,
            group_id,
            read_topic(kafka_bootstrap, topic),
            timeout=120,
            alive=lambda: pipeline.running,
        )
        assert pipeline.stop() == 0, pipeline.logs()
    finally:
        pipeline.kill()
    assert restarts == 3
    assert "retrying" in pipeline.logs()
    report = check_exactly_once(kafka_bootstrap, url, topic, group_id)
    assert report.records == 6000
