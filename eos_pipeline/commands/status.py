"""`status`: stored offsets against the broker's high watermarks (lag), owners and epochs,
dead letters by error class and view freshness; with --max-lag also a health check that
exits 1 when any partition lags more than allowed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from ..config import Settings
from ..errors import ConfigError
from ..status import Status, collect, over_lag
from ..views.registry import load_registry, modules_from_env
from ..views.render import table
from .run import _check_database


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "status", help="lag, owners, dead letters and view freshness", description=__doc__
    )
    p.add_argument("--group", help="only this consumer group (default: every group)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument(
        "--max-lag", type=int, metavar="N", help="exit 1 when any partition lags more than N"
    )
    p.add_argument(
        "--views-module",
        action="append",
        metavar="PKG.MOD",
        help="a module whose VIEWS are reported too (repeatable; EOS_VIEWS_MODULES)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.max_lag is not None and args.max_lag < 0:
        raise ConfigError("--max-lag must not be negative")
    registry = load_registry(args.views_module or modules_from_env())
    _check_database(settings.database_url)
    status = collect(settings, args.group, registry)
    print(as_json(status) if args.format == "json" else as_table(status))
    if args.max_lag is None:
        return 0
    behind = over_lag(status.partitions, args.max_lag)
    for p in behind:
        print(f"{p.group} {p.topic}[{p.partition}] lags {p.lag} > {args.max_lag}", file=sys.stderr)
    return 1 if behind else 0


def as_json(status: Status) -> str:
    return orjson.dumps(status.as_dict(), option=orjson.OPT_INDENT_2).decode()


def as_table(status: Status) -> str:
    partitions = table(
        ("group", "partition", "next_offset", "high", "lag", "owner", "epoch", "updated_at"),
        [
            (
                p.group,
                f"{p.topic}[{p.partition}]",
                _dash(p.next_offset),
                _dash(p.high_watermark),
                _dash(p.lag),
                p.owner or "",
                p.epoch,
                p.updated_at,
            )
            for p in status.partitions
        ],
    )
    letters = table(
        ("topic", "error_class", "dead_letters"),
        [(d.topic, d.error_class, d.count) for d in status.dead_letters],
    )
    views = table(
        ("view", "kind", "refreshed_at", "duration"),
        [
            (
                v.name,
                v.kind,
                v.refreshed_at or "never",
                "" if v.duration_ms is None else f"{v.duration_ms:.0f} ms",
            )
            for v in status.views
        ],
    )
    return f"{partitions}\n\n{letters}\n\n{views}"


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)
