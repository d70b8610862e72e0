"""`topics create NAME --partitions P` and `topics list`: the Admin API for the README, the
tests and the benchmarks."""

from __future__ import annotations

import argparse
from typing import Any

from ..admin import admin_client, create_topic, list_topics
from ..config import Settings
from ..errors import ConfigError


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("topics", help="create and list Kafka topics")
    actions = parser.add_subparsers(dest="topics_action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a topic")
    create.add_argument("name")
    create.add_argument("--partitions", type=int, required=True, metavar="P")
    create.add_argument("--replication-factor", type=int, default=1, metavar="R")
    create.add_argument(
        "--config",
        dest="topic_config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a topic setting, e.g. retention.ms=86400000 (repeatable)",
    )
    create.add_argument("--if-not-exists", action="store_true", help="an existing topic is fine")
    create.set_defaults(handler=run_create)
    listing = actions.add_parser("list", help="topic names and partition counts")
    listing.set_defaults(handler=run_list)


def parse_topic_config(items: list[str]) -> dict[str, str]:
    config: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--config wants KEY=VALUE, got {item!r}")
        config[key.strip()] = value.strip()
    return config


def run_create(args: argparse.Namespace, settings: Settings) -> int:
    if args.partitions < 1 or args.replication_factor < 1:
        raise ConfigError("--partitions and --replication-factor must be at least 1")
    admin = admin_client(settings.kafka_bootstrap, settings.kafka_config)
    created = create_topic(
        admin,
        args.name,
        args.partitions,
        args.replication_factor,
        parse_topic_config(args.topic_config),
        exist_ok=args.if_not_exists,
    )
    if created:
        print(
            f"created topic {args.name} ({args.partitions} partitions, "
            f"replication factor {args.replication_factor})"
        )
    else:
        print(f"topic {args.name} exists")
    return 0


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    topics = list_topics(admin_client(settings.kafka_bootstrap, settings.kafka_config))
    for name, partitions in sorted(topics.items()):
        print(f"{name}\t{partitions}")
    return 0
