"""`python -m benchmarks.chaos [--minutes M | --quick]`: the reliability harness.

On a private broker and server of its own it runs 1 to 3 pipeline processes in one group
while two producers feed the topic (one with poison records, one aborting every other
transaction), and meanwhile SIGKILLs pipeline processes, restarts the broker and restarts
PostgreSQL. Then it lets the group catch up and audits: every committed record of the topic
must be in order_events or dead_letters exactly once, and orders, order_status_counts and the
materialized views must equal an independent fold of the topic. Exit 0 only if all holds.
Every loop is bounded, and the private stack is torn down whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import orjson
import psycopg

from eos_pipeline.admin import admin_client, create_topic
from eos_pipeline.audit import AuditReport, Record, audit, read_topic
from eos_pipeline.db import conninfo

from .latency import wait_for
from .measure import Child
from .stack import PrivateStack, eos_command, flags, private_stack
from .suite import RESULTS

GROUP = "chaos"
PARTITIONS = 4
PIPELINE_FLAGS = ("session.timeout.ms=3000", "heartbeat.interval.ms=500")
# One step of chaos every few seconds; the schedule makes sure each kind happens early.
ACTIONS = ("kill", "restart-pg", "scale", "restart-kafka", "kill", "scale", "kill")


@dataclass
class Figures:
    events: int = 0
    processed: int = 0
    dead_letters: int = 0
    kills: int = 0
    broker_restarts: int = 0
    database_restarts: int = 0
    rebalances: int = 0
    feeder_restarts: int = 0
    pipeline_exits: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    mismatches: int = 0
    ok: bool = False


class Fleet:
    """Children restarted on demand; each start logs to its own file."""

    def __init__(self, logs: Path, name: str, command: Callable[[int], list[str]]) -> None:
        self.logs, self.name, self.command = logs, name, command
        self.starts = 0
        self.live: list[Child] = []

    def start(self) -> None:
        self.starts += 1
        log = self.logs / f"{self.name}-{self.starts}.log"
        self.live.append(Child(self.command(self.starts), log=log))

    def reap(self) -> int:
        """Forget children that exited on their own; returns how many did."""
        before = len(self.live)
        self.live = [c for c in self.live if c.alive()]
        return before - len(self.live)

    def kill(self, child: Child) -> None:
        child.kill()
        self.live.remove(child)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (commit or abort what is open, then exit), SIGKILL after `timeout`."""
        for c in self.live:
            if c.alive():
                c.proc.terminate()
        for c in self.live:
            with contextlib.suppress(TimeoutError):  # wait() has killed it then
                c.wait(timeout=time.monotonic() - c.started + timeout)
        self.live.clear()

    def log_lines(self, needle: str) -> int:
        return sum(
            p.read_text(errors="replace").count(needle)
            for p in self.logs.glob(f"{self.name}-*.log")
        )


class Harness:
    def __init__(self, stack: PrivateStack, logs: Path, seconds: float, seed: int) -> None:
        self.stack, self.seconds = stack, seconds
        self.rng = random.Random(seed)
        self.topic = f"chaos-{seed}"
        self.fig = Figures()
        boot, url = stack.bootstrap, stack.database_url
        run_args = [
            *("run", "--topic", self.topic, "--group", GROUP),
            *("--batch-size", "500", "--batch-timeout-ms", "50"),
            *flags("--kafka-config", PIPELINE_FLAGS),
        ]
        self.pipelines = Fleet(logs, "pipeline", lambda n: eos_command(boot, url, *run_args))
        self.feed = Fleet(
            logs,
            "feed",
            lambda n: eos_command(
                boot, url, "produce", "--topic", self.topic, "--generate", "3000",
                "--seed", str(seed * 1000 + n), "--poison-rate", "0.03",
                "--batch-size", "50", "--transactional-id", "chaos-feed",
            ),
        )  # fmt: skip
        self.aborter = Fleet(
            logs,
            "aborting-feed",
            lambda n: [
                sys.executable, "-m", "benchmarks.aborting_feed", "--bootstrap", boot,
                "--topic", self.topic, "--seed", str(seed * 1000 + 500 + n),
                "--seconds", str(int(seconds) + 60),
            ],
        )  # fmt: skip

    def run(self) -> Figures:
        create_topic(admin_client(self.stack.bootstrap), self.topic, PARTITIONS)
        self.pipelines.start()
        self.feed.start()
        self.aborter.start()
        deadline = time.monotonic() + self.seconds
        step = 0
        while time.monotonic() < deadline:
            time.sleep(self.rng.uniform(2.0, 4.0))
            self._keep_feeding()
            self._act(ACTIONS[step % len(ACTIONS)])
            step += 1
        self.feed.stop()
        self.aborter.stop()
        return self._finish()

    def _keep_feeding(self) -> None:
        for fleet in (self.feed, self.aborter):
            if fleet.reap():
                self.fig.feeder_restarts += 1
                fleet.start()
        self.fig.pipeline_exits += self.pipelines.reap()
        if not self.pipelines.live:
            self.pipelines.start()

    def _act(self, action: str) -> None:
        live = self.pipelines.live
        if action == "kill":
            self.pipelines.kill(self.rng.choice(live))
            self.fig.kills += 1
            self.pipelines.start()
        elif action == "scale":
            target = self.rng.randint(1, 3)
            while len(live) > target:
                self.pipelines.kill(self.rng.choice(live))
                self.fig.kills += 1
            while len(live) < target:
                self.pipelines.start()
        elif action == "restart-kafka":
            self.stack.run("restart-kafka")
            self.fig.broker_restarts += 1
        elif action == "restart-pg":
            self.stack.run("restart-pg")
            self.fig.database_restarts += 1
        print(
            f"chaos: {action}; {len(live)} pipeline process(es), "
            f"{self.feed.starts + self.aborter.starts} feeder start(s)",
            flush=True,
        )

    def _finish(self) -> Figures:
        """Let the group catch up (all three processes running), stop it, audit."""
        self.fig.pipeline_exits += self.pipelines.reap()
        while len(self.pipelines.live) < 3:
            self.pipelines.start()
        records = read_topic(self.stack.bootstrap, self.topic, timeout_s=120)
        url = self.stack.database_url
        try:
            wait_for("the group caught up", lambda: caught_up(url, records), 120)
        finally:
            self.pipelines.stop()
        with psycopg.connect(conninfo(url), autocommit=True) as conn:
            report = audit(conn, records, GROUP)
        self.fig.rebalances = self.pipelines.log_lines(" assigned ")
        self._score(report)
        return self.fig

    def _score(self, report: AuditReport) -> None:
        f = self.fig
        f.events, f.processed, f.dead_letters = (
            report.records,
            report.processed,
            report.dead_letters,
        )
        f.lost, f.duplicated, f.unexpected = (
            len(report.lost),
            len(report.duplicated),
            len(report.unexpected),
        )
        f.mismatches = len(
            report.order_mismatches
            + report.status_count_mismatches
            + report.offsets_behind
            + report.view_mismatches
        )
        f.ok = report.ok and report.records > 0
        if not report.ok:
            print(f"audit failed: {report.summary()}", flush=True)


def caught_up(url: str, records: Sequence[Record]) -> bool:
    """Every partition's stored next offset is past its last committed record."""
    last: dict[tuple[str, int], int] = {}
    for r in records:
        last[(r.topic, r.partition)] = max(last.get((r.topic, r.partition), -1), r.offset)
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        stored = {
            (str(t), int(p)): int(n)
            for t, p, n in conn.execute(
                "SELECT topic, partition, next_offset FROM eos_offsets "
                "WHERE consumer_group = %s AND next_offset IS NOT NULL",
                (GROUP,),
            ).fetchall()
        }
    return all(stored.get(tp, 0) > off for tp, off in last.items())


def table(fig: Figures) -> str:
    rows = [
        ("events (committed records)", fig.events),
        ("  processed into order_events", fig.processed),
        ("  dead letters", fig.dead_letters),
        ("pipeline processes SIGKILLed", fig.kills),
        ("broker restarts", fig.broker_restarts),
        ("database restarts", fig.database_restarts),
        ("rebalances ('assigned' log lines)", fig.rebalances),
        ("producer restarts (finished or failed)", fig.feeder_restarts),
        ("pipeline exits (not killed)", fig.pipeline_exits),
        ("lost", fig.lost),
        ("duplicated", fig.duplicated),
        ("unexpected (aborted/unknown)", fig.unexpected),
        ("state mismatches", fig.mismatches),
        ("verdict", "exactly once" if fig.ok else "FAILED"),
    ]
    return "\n".join(f"{k:<38}{v!s:>14}" for k, v in rows)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the teardown


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    p.add_argument("--minutes", type=float, default=5.0, help="length of the chaos phase")
    p.add_argument("--quick", action="store_true", help="one minute of chaos (CI smoke test)")
    p.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    args = p.parse_args(argv)
    seconds = 60.0 if args.quick else args.minutes * 60
    signal.signal(signal.SIGTERM, _terminate)
    logs = RESULTS / f"chaos-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{args.seed}"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    harness: Harness | None = None
    try:
        with private_stack() as stack:
            print(f"private stack: Kafka {stack.bootstrap}, PostgreSQL port {stack.pg_port}")
            harness = Harness(stack, logs, seconds, args.seed)
            try:
                fig = harness.run()
            finally:
                for fleet in (harness.feed, harness.aborter, harness.pipelines):
                    for child in fleet.live:
                        child.kill()
    except Exception as exc:
        print(f"chaos harness failed: {type(exc).__name__}: {exc}", flush=True)
        return 1
    print()
    print(f"seed {args.seed}, {seconds / 60:.1f} min of chaos, {time.monotonic() - started:.0f} s")
    print(table(fig))
    path = logs / "figures.json"
    path.write_bytes(orjson.dumps(asdict(fig) | {"seed": args.seed, "seconds": seconds}))
    print(f"results: {path} (logs beside it)")
    return 0 if fig.ok else 1


if __name__ == "__main__":
    sys.exit(main())
