"""`run`: the exactly-once consumer, Kafka -> PostgreSQL (or Kafka -> Kafka with --sink kafka)."""

from __future__ import annotations

import argparse
import importlib
import logging
from typing import Any

from ..admin import require_topics
from ..batching import BatchPolicy
from ..config import Settings
from ..db import connect, mask_url
from ..errors import ConfigError
from ..handlers import DEFAULT_HANDLER, load_handler
from ..metrics import PipelineMetrics
from ..pipeline import BatchObserver, Pipeline, RunConfig
from ..runtime import tune_for_throughput
from ..views.refresher import refresher_from_settings

log = logging.getLogger(__name__)


def parse_kafka_config(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--kafka-config takes key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="consume Kafka into PostgreSQL exactly once (offsets stored in PostgreSQL)",
        description="Each batch's results and each partition's next offset are written in one "
        "PostgreSQL transaction; a per-partition epoch fences consumers that lost a partition.",
    )
    p.add_argument("--topic", action="append", help="topic to consume (repeatable; EOS_TOPIC)")
    p.add_argument("--group", help="consumer group (EOS_GROUP_ID; default eos-pipeline)")
    p.add_argument(
        "--handler",
        dest="handler_path",
        help=f"package.module:callable (default {DEFAULT_HANDLER}; with --sink kafka the "
        "stage's default)",
    )
    p.add_argument("--batch-size", type=int, default=5000, help="max messages per batch")
    p.add_argument("--batch-timeout-ms", type=int, default=100, help="max wait to fill a batch")
    p.add_argument(
        "--assignor",
        default="cooperative-sticky",
        help="partition.assignment.strategy: cooperative-sticky (default), range, roundrobin",
    )
    p.add_argument(
        "--start",
        choices=("earliest", "latest"),
        default="earliest",
        help="where a partition with no stored offset starts (never Kafka's committed offset)",
    )
    p.add_argument(
        "--kafka-config",
        action="append",
        metavar="KEY=VALUE",
        help="any librdkafka consumer setting (repeatable), e.g. session.timeout.ms=6000",
    )
    p.add_argument("--handler-retries", type=int, default=2, help="batch retries before bisecting")
    p.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="stop (exit 0) after this long without new messages",
    )
    p.add_argument(
        "--views-module",
        action="append",
        metavar="PKG.MOD",
        help="a module whose VIEWS the refresher keeps fresh too (repeatable; EOS_VIEWS_MODULES)",
    )
    p.add_argument(
        "--no-view-refresh",
        action="store_true",
        help="do not refresh materialized views from this process",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="threads committing batches, each on its own connection; a partition is served by "
        "one worker at a time, so its order is kept (default 1: inline in the poll thread)",
    )
    p.add_argument(
        "--order",
        choices=("partition", "key"),
        default="partition",
        help="partition (default): a partition's records in offset order; key: records of "
        "one key in order, a partition's keys spread over the workers (its offset advances "
        "only to where everything below is committed)",
    )
    p.add_argument(
        "--async-commit",
        action="store_true",
        help="batch commits do not wait for PostgreSQL's WAL flush (synchronous_commit=off): "
        "faster; a server crash may lose the last commits, which are then processed again "
        "with their offsets (still exactly once for writes inside PostgreSQL)",
    )
    p.add_argument(
        "--max-rate",
        type=float,
        metavar="MSGS_PER_S",
        help="at most this many records a second (token bucket; partitions pause, polling goes on)",
    )
    p.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on this port"
    )
    p.add_argument(
        "--mirror-offsets-to-kafka",
        action="store_true",
        help="also commit the stored offsets to Kafka (asynchronously) so Kafka's lag tools "
        "work; they are never read back",
    )
    p.add_argument("--sink", choices=("postgres", "kafka"), default="postgres")
    try:
        stage = importlib.import_module("eos_pipeline.stage")
    except ImportError:
        stage = None
    if stage is not None:
        stage.add_stage_arguments(p)
    p.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.with_overrides(
        topics=tuple(args.topic) if args.topic else None, group_id=args.group
    )
    if args.sink == "kafka":
        from ..stage import run_stage

        code: int = run_stage(args, settings)
        return code
    return run(args, settings)


def _check_database(url: str) -> None:
    """Reachable, and migrated: one readable line otherwise."""
    with connect(url) as conn:
        found = conn.execute("SELECT to_regclass('eos_offsets') IS NOT NULL").fetchone()
    if not found or not found[0]:
        raise ConfigError(
            f"{mask_url(url)} has no eos_offsets table: run `python -m eos_pipeline migrate` first"
        )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.batch_size < 1 or args.batch_timeout_ms < 0:
        raise ConfigError("--batch-size must be >= 1 and --batch-timeout-ms >= 0")
    if args.workers < 1 or (args.max_rate is not None and args.max_rate <= 0):
        raise ConfigError("--workers must be >= 1 and --max-rate positive")
    spec = load_handler(args.handler_path or DEFAULT_HANDLER)
    kafka_config = {**settings.kafka_config, **parse_kafka_config(args.kafka_config)}
    _check_database(settings.database_url)
    require_topics(settings.kafka_bootstrap, settings.kafka_config, settings.topics)
    cfg = RunConfig(
        kafka_bootstrap=settings.kafka_bootstrap,
        database_url=settings.database_url,
        group_id=settings.group_id,
        topics=settings.topics,
        handler=spec.name,
        batch=BatchPolicy(args.batch_size, args.batch_timeout_ms / 1000),
        assignor=args.assignor,
        start=args.start,
        kafka_config=kafka_config,
        handler_retries=args.handler_retries,
        idle_exit_s=args.exit_when_idle,
        mirror_offsets_to_kafka=args.mirror_offsets_to_kafka,
        workers=args.workers,
        max_rate=args.max_rate,
        order=args.order,
        async_commit=args.async_commit,
    )
    metrics = PipelineMetrics()
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    observers: list[BatchObserver] = (
        [] if args.no_view_refresh else [refresher_from_settings(settings, args.views_module)]
    )
    pipeline = Pipeline(cfg, spec, observers=observers, metrics=metrics)
    pipeline.install_signal_handlers()
    tune_for_throughput(threads=cfg.workers)
    log.info(
        "running %s: group %s, topics %s, database %s",
        spec.name,
        cfg.group_id,
        ", ".join(cfg.topics),
        mask_url(cfg.database_url),
    )
    pipeline.run()
    return 0
