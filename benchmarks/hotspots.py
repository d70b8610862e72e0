"""`python -m benchmarks.hotspots [--messages N]`: where `run`'s time goes. cProfile around an
in-process Pipeline (default handler and batch size, no view refresher) draining a fresh
topic; prints the top functions by own time and by cumulative time (wall clock of the main
thread, so waits on PostgreSQL and Kafka show up as the calls that wait)."""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Sequence

from eos_pipeline.pipeline import Pipeline, RunConfig

from .stack import Stack, unique
from .suite import RESULTS, produce_once


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.hotspots", description=__doc__)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args(argv)
    stack = Stack.from_environment()
    try:
        topic = stack.topic(4, prefix="bench-profile")
        produce_once(stack, topic, args.messages)
        cfg = RunConfig(
            kafka_bootstrap=stack.bootstrap,
            database_url=stack.fresh_database(),
            group_id=unique("bench-profile"),
            topics=(topic,),
            idle_exit_s=2.0,
        )
        pipeline = Pipeline(cfg)
        profiler = cProfile.Profile()
        start = time.monotonic()
        profiler.runcall(pipeline.run)
        wall = time.monotonic() - start
    finally:
        stack.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"profile-{int(time.time())}.pstats"
    profiler.dump_stats(path)
    print(f"{pipeline.stats.committed} committed in {wall:.1f} s (2 s of it idle before exit)")
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(args.top)
        print(out.getvalue())
    print(f"profile: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
