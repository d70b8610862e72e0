"""`migrate`: upgrade the database schema to the newest revision."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import Settings
from ..db import mask_url
from ..migrate import upgrade


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "migrate", help="upgrade the PostgreSQL schema (alembic upgrade)"
    )
    parser.add_argument("--revision", default="head", help="target revision (default head)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    upgrade(settings.database_url, args.revision)
    print(f"migrated {mask_url(settings.database_url)} to {args.revision}")
    return 0
