"""`python -m benchmarks`: `eos_pipeline run` against its ceilings and the naive loops, all on
the same generated orders events, produced once up front into one topic.

Throughput of `run` is read from PostgreSQL while it works: the group's committed offsets are
sampled every 0.1 s, and the rate is taken from the first sample with a commit to the sample
where everything is committed (startup, group join and the idle exit are left out). CPU and
peak RSS are the child's own (wait4); for `run` the CPU is the whole process, startup included
(the two-process mode, two `run` processes in one group, sums their CPU and reports the larger
RSS). PostgreSQL's and Kafka's own CPU is not counted for any mode.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg

from eos_pipeline.db import conninfo

from .latency import Latency, measure_latency
from .measure import Child, median
from .stack import ROOT, Stack, eos_command, pipeline_command, unique

RESULTS = ROOT / "benchmarks" / "results"
SEED = 7
DEFAULT_BATCH = 5000


@dataclass
class Mode:
    """One line of the table: the runs of one way of moving the data."""

    name: str
    rates: list[float] = field(default_factory=list)
    cpu_per_m: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    messages: int = 0
    latency: Latency | None = None

    @property
    def rate(self) -> float:
        return median(self.rates)

    def add(self, messages: int, seconds: float, cpu_s: float, rss_mib: float) -> None:
        self.messages = messages
        self.rates.append(messages / seconds)
        self.cpu_per_m.append(cpu_s / messages * 1e6)
        self.rss_mib.append(rss_mib)


@dataclass(frozen=True)
class Plan:
    messages: int
    runs: int
    partitions: int
    tuned_batch: int
    threaded_batch: int
    threaded_workers: int
    naive_limit: int
    latency_rate: int
    latency_seconds: float
    slow_messages: int


def parse_args(argv: Sequence[str] | None) -> tuple[Plan, bool]:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="about 50k messages, one run each")
    p.add_argument("--messages", type=int, help="events produced (default 1M; quick 50k)")
    p.add_argument("--runs", type=int, help="runs per mode, median reported (default 3)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--tuned-batch", type=int, default=20_000, help="the tuned --batch-size")
    p.add_argument(
        "--threaded-batch", type=int, default=10_000, help="--batch-size of the threaded mode"
    )
    p.add_argument("--threaded-workers", type=int, default=2, help="--workers of the threaded mode")
    p.add_argument("--naive-limit", type=int, help="prefix for the naive loops (default 20k)")
    p.add_argument("--latency-rate", type=int, help="msg/s of the live load (default 5000)")
    p.add_argument("--latency-seconds", type=float, help="length of the live load (default 20)")
    p.add_argument(
        "--slow-messages", type=int, help="events for the slow-handler modes (default 100k)"
    )
    a = p.parse_args(argv)
    q = a.quick
    plan = Plan(
        messages=a.messages or (50_000 if q else 1_000_000),
        runs=a.runs or (1 if q else 3),
        partitions=a.partitions,
        tuned_batch=a.tuned_batch,
        threaded_batch=a.threaded_batch,
        threaded_workers=a.threaded_workers,
        naive_limit=a.naive_limit or (2_000 if q else 20_000),
        latency_rate=a.latency_rate or (2_000 if q else 5_000),
        latency_seconds=a.latency_seconds or (5 if q else 20),
        slow_messages=a.slow_messages or (20_000 if q else 100_000),
    )
    return plan, q


def produce_once(stack: Stack, topic: str, n: int) -> float:
    """The data set, produced with the project's own `produce` (Kafka transactions)."""
    start = time.monotonic()
    child = Child(
        eos_command(
            stack.bootstrap,
            stack.database_url,
            "produce",
            "--topic",
            topic,
            "--generate",
            str(n),
            "--seed",
            str(SEED),
            "--batch-size",
            "5000",
            "--transactional-id",
            unique("bench-produce"),
        )
    )
    if child.wait(timeout=600).returncode != 0:
        raise RuntimeError("producing the benchmark data failed")
    return time.monotonic() - start


def run_worker(stack: Stack, logs: Path, mode: Mode, worker: str, topic: str, *args: str) -> None:
    """A baseline from benchmarks.workers, on a fresh database of its own."""
    url = stack.fresh_database()
    log = logs / f"{worker}.log"
    child = Child(
        [
            sys.executable,
            "-m",
            "benchmarks.workers",
            worker,
            "--bootstrap",
            stack.bootstrap,
            "--topic",
            topic,
            "--database-url",
            url,
            "--group",
            unique("bench-naive"),
            *args,
        ],
        log=log,
    )
    try:
        usage = child.wait(timeout=1800)
    finally:
        stack.drop(url)
    if usage.returncode != 0:
        raise RuntimeError(f"{worker} failed: {log.read_text()[-2000:]}")
    out = orjson.loads(log.read_bytes().splitlines()[-1])
    mode.add(out["messages"], out["seconds"], out["cpu_s"], usage.max_rss_mib)


class Progress:
    """Samples a group's committed message count; remembers first commit and completion."""

    def __init__(self, url: str, group: str, total: int) -> None:
        self.conn = psycopg.connect(conninfo(url), autocommit=True)
        self.group, self.total = group, total
        self.first: tuple[float, int] | None = None
        self.done_at: float | None = None

    def __call__(self) -> None:
        if self.done_at is not None:
            return
        row = self.conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM eos_offsets WHERE consumer_group = %s",
            (self.group,),
        ).fetchone()
        n, now = int(row[0]) if row else 0, time.monotonic()
        if n > 0 and self.first is None:
            self.first = (now, n)
        if n >= self.total:
            self.done_at = now

    def rate_window(self) -> tuple[int, float]:
        """Messages and seconds between the first sampled commit and completion."""
        if self.first is None or self.done_at is None:
            raise RuntimeError("the pipeline did not commit everything")
        start, n0 = self.first
        if n0 >= self.total:  # all in the first sample: no window to measure
            return self.total, max(self.done_at - start, 0.1)
        return self.total - n0, self.done_at - start


# `run --workers` against a handler that waits per batch of SLOW_BATCH records: 5 ms, and
# 20 ms (on SLOWER_SHARE of the events). Beside the 5 ms case, the same batches committed by
# 1 and by 4 independent processes without Kafka (`commit-only`): what the machine allows.
SLOW_BATCH = 50
SLOW_HANDLER = "benchmarks.probe:handle_orders_slowly"
SLOWER_HANDLER = "benchmarks.probe:handle_orders_very_slowly"
SLOWER_SHARE = 0.4


@dataclass
class SlowModes:
    """The slow-handler lines of the table."""

    one: Mode = field(default_factory=lambda: Mode("slow handler 5 ms, 1 worker"))
    four: Mode = field(default_factory=lambda: Mode("slow handler 5 ms, 4 workers"))
    ceiling_one: Mode = field(default_factory=lambda: Mode("commit only 5 ms, 1 process"))
    ceiling_four: Mode = field(default_factory=lambda: Mode("commit only 5 ms, 4 processes"))
    slower_one: Mode = field(default_factory=lambda: Mode("slow handler 20 ms, 1 worker"))
    slower_four: Mode = field(default_factory=lambda: Mode("slow handler 20 ms, 4 workers"))

    def all(self) -> list[Mode]:
        return [
            self.one,
            self.four,
            self.ceiling_one,
            self.ceiling_four,
            self.slower_one,
            self.slower_four,
        ]

    def run_round(self, stack: Stack, logs: Path, topic: str, slower_topic: str, n: int) -> None:
        slower_n = int(n * SLOWER_SHARE)
        for mode, handler, source, events, workers in (
            (self.one, SLOW_HANDLER, topic, n, "1"),
            (self.four, SLOW_HANDLER, topic, n, "4"),
            (self.slower_one, SLOWER_HANDLER, slower_topic, slower_n, "1"),
            (self.slower_four, SLOWER_HANDLER, slower_topic, slower_n, "4"),
        ):
            run_pipeline(
                stack, logs, mode, source, events, SLOW_BATCH,
                *("--handler", handler, "--workers", workers, "--no-view-refresh"),
            )  # fmt: skip
        for mode, processes in ((self.ceiling_one, "1"), (self.ceiling_four, "4")):
            run_worker(
                stack, logs, mode, "commit-only", topic,
                *("--batch", str(SLOW_BATCH), "--handler", SLOW_HANDLER, "--processes", processes),
            )  # fmt: skip

    def ratios(self) -> dict[str, float]:
        return {
            f"{self.four.name} / 1 worker": ratio(self.four, self.one),
            f"{self.ceiling_four.name} / 1 process": ratio(self.ceiling_four, self.ceiling_one),
            f"{self.four.name} / commit only, 4 processes": ratio(self.four, self.ceiling_four),
            f"{self.slower_four.name} / 1 worker": ratio(self.slower_four, self.slower_one),
        }


def run_pipeline(
    stack: Stack,
    logs: Path,
    mode: Mode,
    topic: str,
    total: int,
    batch: int,
    *extra: str,
    processes: int = 1,
) -> None:
    """`python -m eos_pipeline run` (in `processes` processes of one group) on a fresh
    database and group until idle. CPU is summed over the processes, RSS is the largest."""
    url = stack.fresh_database()
    group = unique("bench-run")
    slug = "".join(c if c.isalnum() else "-" for c in mode.name)
    command = pipeline_command(stack.bootstrap, url, topic, group, batch, *extra)
    logs_of = [logs / f"run-{slug}-{i}.log" for i in range(processes)]
    children = [Child(command, log=log) for log in logs_of]
    progress = Progress(url, group, total)
    try:
        usages = [child.wait(timeout=1800, poll=progress) for child in children]
        progress()
    finally:
        for child in children:
            child.kill()
        progress.conn.close()
        stack.drop(url)
    for usage, log in zip(usages, logs_of, strict=True):
        if usage.returncode != 0:
            raise RuntimeError(f"run failed: {log.read_text()[-2000:]}")
    committed, seconds = progress.rate_window()
    cpu_s = sum(u.cpu_s for u in usages)
    mode.add(committed, seconds, cpu_s * committed / total, max(u.max_rss_mib for u in usages))
    mode.messages = total


def ratio(a: Mode, b: Mode) -> float:
    return a.rate / b.rate if b.rate else float("nan")


def table(modes: Sequence[Mode], runs: int) -> str:
    head = (
        f"{'mode':<34}{'msgs':>9}{'msg/s (median of ' + str(runs) + ')':>24}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'CPU s/M msgs':>14}{'peak RSS MiB':>14}"
    )
    lines = [head, "-" * len(head)]
    for m in modes:
        p50 = f"{m.latency.p50_ms:.0f}" if m.latency else "-"
        p99 = f"{m.latency.p99_ms:.0f}" if m.latency else "-"
        lines.append(
            f"{m.name:<34}{m.messages:>9}{m.rate:>24,.0f}{p50:>9}{p99:>9}"
            f"{median(m.cpu_per_m):>14.1f}{max(m.rss_mib):>14.0f}"
        )
    return "\n".join(lines)


def ratios(eos: Sequence[Mode], base: dict[str, Mode]) -> dict[str, float]:
    return {f"{e.name} / {b.name}": ratio(e, b) for e in eos for b in base.values()}


def machine() -> dict[str, Any]:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "python": platform.python_version(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    plan, quick = parse_args(argv)
    # One directory per run: concurrent runs (CI beside a developer) must not share logs.
    logs = RESULTS / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{unique('run')}"
    logs.mkdir(parents=True)
    stack = Stack.from_environment()
    # The pipeline's modes: (name, --batch-size, extra arguments, processes in the group);
    # the first is the default.
    eos_modes: tuple[tuple[str, int, tuple[str, ...], int], ...] = (
        (f"eos run, batch {DEFAULT_BATCH}", DEFAULT_BATCH, (), 1),
        (f"eos run, batch {plan.tuned_batch}", plan.tuned_batch, (), 1),
        (
            f"eos run, batch {plan.threaded_batch}, {plan.threaded_workers} workers",
            plan.threaded_batch,
            ("--workers", str(plan.threaded_workers)),
            1,
        ),
        (f"eos run x2 processes, batch {DEFAULT_BATCH}", DEFAULT_BATCH, (), 2),
    )
    names = ["raw consume", "raw store (COPY)", *(mode[0] for mode in eos_modes)]
    names += ["naive: Kafka commit/msg", "naive: PG txn/msg"]
    m = [Mode(name) for name in names]
    raw, store, eos, naive_c, naive_t = m[0], m[1], m[2:6], m[6], m[7]
    slow = SlowModes()
    m += slow.all()
    try:
        topic = stack.topic(plan.partitions)
        produce_s = produce_once(stack, topic, plan.messages)
        print(f"produced {plan.messages} events into {topic} in {produce_s:.1f} s", flush=True)
        slow_topic = stack.topic(plan.partitions)
        produce_once(stack, slow_topic, plan.slow_messages)
        slower_topic = stack.topic(plan.partitions)
        produce_once(stack, slower_topic, int(plan.slow_messages * SLOWER_SHARE))
        limit = str(plan.naive_limit)
        for round_ in range(plan.runs):
            run_worker(stack, logs, raw, "raw-consume", topic)
            run_worker(stack, logs, store, "raw-store", topic, "--batch", str(DEFAULT_BATCH))
            for mode, (_, batch, extra, processes) in zip(eos, eos_modes, strict=True):
                run_pipeline(
                    stack, logs, mode, topic, plan.messages, batch, *extra, processes=processes
                )
            run_worker(stack, logs, naive_c, "naive-commit", topic, "--limit", limit)
            run_worker(stack, logs, naive_t, "naive-txn", topic, "--limit", limit)
            slow.run_round(stack, logs, slow_topic, slower_topic, plan.slow_messages)
            print(
                f"round {round_ + 1}/{plan.runs}: "
                + ", ".join(f"{x.name} {x.rates[-1]:,.0f}/s" for x in m),
                flush=True,
            )
        for mode, (_, batch, extra, processes) in zip(eos, eos_modes, strict=True):
            if processes == 1:  # the live-load phase runs one process
                mode.latency = measure_latency(
                    stack, batch, plan.latency_rate, plan.latency_seconds, plan.partitions, extra
                )
    finally:
        stack.close()
    report = table(m, plan.runs)
    rel = ratios(eos, {"raw": raw, "store": store, "naive_c": naive_c, "naive_t": naive_t})
    rel.update(slow.ratios())
    best = max(eos, key=lambda x: x.rate)
    targets = {
        "run >= 50% of min(raw consume, raw store)": best.rate >= 0.5 * min(raw.rate, store.rate),
        "run >= 20x the per-message-transaction loop": best.rate >= 20 * naive_t.rate,
    }
    print()
    print(report)
    print()
    for k, v in rel.items():
        print(f"{k:<58}{v:>8.2f}")
    print(f"latency: live load of {plan.latency_rate} msg/s for {plan.latency_seconds:.0f} s")
    for k, ok in targets.items():
        print(f"target {k}: {'met' if ok else 'MISSED'}")
    path = logs / ("results-quick.json" if quick else "results.json")
    path.write_bytes(
        orjson.dumps(
            {
                "machine": machine(),
                "plan": asdict(plan),
                "modes": [asdict(x) | {"median_rate": x.rate} for x in m],
                "ratios": rel,
                "targets": targets,
                "table": report,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    print(f"results: {path}")
    return 0
