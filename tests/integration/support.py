"""Helpers for the end-to-end tests: real subprocesses, real broker, real database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psycopg

from eos_pipeline.audit import AuditReport, Record, audit, read_topic
from eos_pipeline.db import conninfo

from .ledger import LEDGER_DDL

ROOT = Path(__file__).resolve().parents[2]
FAST_GROUP = ("session.timeout.ms=3000", "heartbeat.interval.ms=500")
LEDGER = "tests.integration.ledger:handler"


def cli(bootstrap: str, database_url: str, *args: str) -> list[str]:
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


def _produce_args(
    bootstrap: str, topic: str, n: int, seed: int, poison_rate: float, batch_size: int
) -> list[str]:
    return [
        sys.executable, "-m", "eos_pipeline", "--bootstrap", bootstrap, "produce",
        "--topic", topic, "--generate", str(n), "--seed", str(seed),
        "--poison-rate", str(poison_rate), "--batch-size", str(batch_size),
    ]  # fmt: skip


def produce(
    bootstrap: str,
    topic: str,
    n: int,
    seed: int,
    poison_rate: float = 0.0,
    batch_size: int = 500,
    extra: Sequence[str] = (),
) -> None:
    """Produce n generated orders events in Kafka transactions (blocks until committed)."""
    subprocess.run(
        [*_produce_args(bootstrap, topic, n, seed, poison_rate, batch_size), *extra],
        check=True,
        capture_output=True,
        timeout=120,
    )


def start_producer(
    bootstrap: str, topic: str, n: int, seed: int, poison_rate: float = 0.0, batch_size: int = 200
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        _produce_args(bootstrap, topic, n, seed, poison_rate, batch_size),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape_metrics(port: int) -> dict[str, float]:
    """The pipeline's Prometheus metrics, by series (name with labels)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


class PipelineProcess:
    """`python -m eos_pipeline run` as a child process, its log kept in a file."""

    def __init__(
        self,
        bootstrap: str,
        database_url: str,
        topic: str,
        group: str,
        log_dir: Path,
        *extra: str,
        name: str = "p",
    ) -> None:
        self.args = cli(
            bootstrap,
            database_url,
            "run",
            "--topic",
            topic,
            "--group",
            group,
            "--batch-size",
            "200",
            "--batch-timeout-ms",
            "50",
            "--handler",
            LEDGER,
            *[a for kv in FAST_GROUP for a in ("--kafka-config", kv)],
            *extra,
        )
        create_ledger(database_url)
        self.log_dir = log_dir
        self.name = name
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: Mapping[str, str] | None = None) -> PipelineProcess:
        self.starts += 1
        with open(self.log_dir / f"{self.name}-{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env
            )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def current_log(self) -> str:
        path = self.log_dir / f"{self.name}-{self.starts}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for(self, text: str, timeout: float = 30) -> None:
        """Until the current run logged `text` (e.g. "assigned")."""
        deadline = time.monotonic() + timeout
        while text not in self.current_log():
            if not self.running or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the log:\n{self.logs()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM: the pipeline commits its in-flight batch and exits 0. Sent once it runs
        (its signal handlers are in place when it logs "running")."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.wait_for("running")
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.log_dir.glob(f"{self.name}-*.log"))
        )


def stored_offsets(database_url: str, group: str) -> dict[tuple[str, int], int]:
    with psycopg.connect(conninfo(database_url)) as conn:
        rows = conn.execute(
            "SELECT topic, partition, next_offset FROM eos_offsets "
            "WHERE consumer_group = %s AND next_offset IS NOT NULL",
            (group,),
        ).fetchall()
    return {(t, p): n for t, p, n in rows}


def wait_caught_up(
    database_url: str,
    group: str,
    records: Sequence[Record],
    timeout: float = 90,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Until every partition's stored next_offset is past its last record."""
    last: dict[tuple[str, int], int] = {}
    for r in records:
        last[(r.topic, r.partition)] = max(last.get((r.topic, r.partition), -1), r.offset)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = stored_offsets(database_url, group)
        if all(stored.get(tp, 0) > off for tp, off in last.items()):
            return
        if alive is not None and not alive():
            raise AssertionError("no pipeline process is running")
        time.sleep(0.3)
    raise AssertionError(f"not caught up after {timeout}s: stored {stored}, last {last}")


def create_ledger(database_url: str) -> None:
    with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
        conn.execute(LEDGER_DDL)


def check_exactly_once(
    bootstrap: str,
    database_url: str,
    topic: str,
    group: str,
    expect_records: int | None = None,
    order: str = "partition",
) -> AuditReport:
    """The audit, plus (where the ledger handler ran) no source offset handled twice."""
    records = read_topic(bootstrap, topic)
    if expect_records is not None:
        assert len(records) == expect_records
    with psycopg.connect(conninfo(database_url)) as conn:
        report = audit(conn, records, group)
        assert report.ok, report.summary()
        if conn.execute("SELECT to_regclass('eos_test_ledger')").fetchone() != (None,):
            twice = conn.execute(
                "SELECT src_topic, src_partition, src_offset, count(*) FROM eos_test_ledger "
                "GROUP BY 1, 2, 3 HAVING count(*) > 1 LIMIT 5"
            ).fetchall()
            assert not twice, f"handled more than once: {twice}"
            handled = conn.execute(
                "SELECT count(*) FROM eos_test_ledger WHERE src_topic = %s", (topic,)
            ).fetchone()
            decode_failures = conn.execute(
                "SELECT count(*) FROM dead_letters WHERE src_topic = %s "
                "AND error_class IN ('DecodeError', 'InvalidJson', 'ValidationError')",
                (topic,),
            ).fetchone()
            assert handled is not None and decode_failures is not None
            assert handled[0] + decode_failures[0] == len(records)
            scope = "src_partition" if order == "partition" else "src_partition, src_key"
            out_of_order = conn.execute(
                "SELECT src_partition, src_offset FROM (SELECT src_partition, src_offset, "
                f"lag(src_offset) OVER (PARTITION BY {scope} ORDER BY seq) AS before "
                "FROM eos_test_ledger WHERE src_topic = %s) s WHERE src_offset <= before LIMIT 5",
                (topic,),
            ).fetchall()
            assert not out_of_order, f"handled out of {order} order: {out_of_order}"
    assert report.processed + report.dead_letters == len(records)
    return report


def env_with_path() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}
