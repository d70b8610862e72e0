"""`replay`: move a consumer group's stored offsets (PostgreSQL, never Kafka's) to reprocess or
skip records. It prints the plan, asks (or needs --yes), then resets in one transaction; a
running pipeline is fenced at its next commit for a reset partition and continues from there."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ..admin import ADMIN_TIMEOUT_S, admin_client, list_topics
from ..config import Settings
from ..db import connect
from ..errors import ConfigError
from ..replay import (
    PLAN_COLUMNS,
    PartitionPlan,
    ResetResult,
    Target,
    build_plan,
    duration_target,
    offset_lookup,
    parse_duration,
    parse_partitions,
    parse_timestamp,
    plan_rows,
    quiet_kafka,
    replay_owner,
    reset_offsets,
    select_partitions,
    stored_offsets,
)
from ..views.registry import load_registry, modules_from_env
from ..views.render import table
from .run import _check_database

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "replay",
        help="reset a group's stored offsets to reprocess or skip records",
        description=__doc__,
    )
    p.add_argument("--group", required=True, help="the consumer group whose offsets move")
    p.add_argument("--topic", required=True, help="the topic whose partitions move")
    p.add_argument(
        "--partitions", type=parse_partitions, metavar="P,P,...", help="default: every partition"
    )
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="the low watermark")
    to.add_argument("--to-latest", action="store_true", help="the high watermark (skip all)")
    to.add_argument("--to-offset", type=int, metavar="N", help="offset N in every partition")
    to.add_argument(
        "--to-timestamp",
        metavar="ISO-8601",
        help="the first record at or after this time, e.g. 2026-03-01T12:00:00Z",
    )
    to.add_argument(
        "--by-duration", metavar="1h30m", help="like --to-timestamp with now minus the duration"
    )
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="in the same transaction, delete what the replayed records derived (order_events, "
        "dead_letters), recompute the orders they touched and rebuild incremental views",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--views-module",
        action="append",
        metavar="PKG.MOD",
        help="a module whose incremental VIEWS --rebuild recomputes too (EOS_VIEWS_MODULES)",
    )
    p.set_defaults(handler=run)


def target_of(args: argparse.Namespace) -> Target:
    if args.to_earliest:
        return Target("earliest")
    if args.to_latest:
        return Target("latest")
    if args.to_offset is not None:
        return Target("offset", args.to_offset)
    if args.to_timestamp is not None:
        return Target("timestamp", parse_timestamp(args.to_timestamp))
    return duration_target(parse_duration(args.by_duration))


def plan(
    args: argparse.Namespace, settings: Settings, stored: dict[int, int | None]
) -> tuple[PartitionPlan, ...]:
    """Validate topic and partitions against the broker and resolve the target offsets."""
    target = target_of(args)
    topics = list_topics(
        admin_client(settings.kafka_bootstrap, quiet_kafka(settings.kafka_config)), ADMIN_TIMEOUT_S
    )
    if args.topic not in topics:
        raise ConfigError(f"topic {args.topic!r} not found on {settings.kafka_bootstrap}")
    partitions = select_partitions(args.topic, topics[args.topic], args.partitions)
    with offset_lookup(settings.kafka_bootstrap, settings.kafka_config) as lookup:
        marks = lookup.watermarks(args.topic, partitions)
        by_time = (
            lookup.offsets_for_times(args.topic, partitions, target.value)
            if target.kind == "timestamp"
            else None
        )
    return build_plan(args.topic, partitions, stored, marks, target, by_time)


def confirmed(group: str, count: int) -> bool:
    """Ask on the terminal; with no terminal to ask on, refuse (scripts pass --yes)."""
    if not sys.stdin.isatty():
        raise ConfigError("no terminal to confirm on: pass --yes to replay, or --dry-run")
    answer = input(f"reset {count} partition(s) of group {group}? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def run(args: argparse.Namespace, settings: Settings) -> int:
    _check_database(settings.database_url)
    rebuild = load_registry(args.views_module or modules_from_env()).incremental()
    with connect(settings.database_url, application_name="eos-replay") as conn:
        stored = stored_offsets(conn, args.group, args.topic)
        plans = plan(args, settings, stored)
        print(f"replay of group {args.group}, topic {args.topic}: to {target_of(args).describe()}")
        print(table(PLAN_COLUMNS, plan_rows(plans)))
        if args.dry_run:
            print("dry run: nothing changed")
            return 0
        if not args.yes and not confirmed(args.group, len(plans)):
            print("not confirmed: nothing changed")
            return 1
        owner = replay_owner()
        result = reset_offsets(conn, args.group, plans, owner, rebuild if args.rebuild else None)
    report(plans, result, owner)
    return 0


def report(plans: tuple[PartitionPlan, ...], result: ResetResult, owner: str) -> None:
    moved = ", ".join(
        f"{p.topic}[{p.partition}] {_fmt(result.previous.get(p.partition))} -> {p.new}"
        for p in plans
    )
    print(f"reset {len(plans)} partition(s) as {owner}: {moved}")
    if result.rebuilt:
        print(
            f"rebuilt: deleted {result.events_deleted} order_events and "
            f"{result.dead_letters_deleted} dead_letters, recomputed "
            f"{result.orders_recomputed} orders ({result.orders_deleted} removed), rebuilt "
            f"{', '.join(result.views_rebuilt) or 'no incremental view'}; materialized views "
            "catch up at their next refresh"
        )


def _fmt(offset: int | None) -> str:
    return "-" if offset is None else str(offset)
