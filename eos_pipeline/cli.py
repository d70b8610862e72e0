"""Command line: `python -m eos_pipeline SUBCOMMAND`. Each subcommand lives in its own module
under `eos_pipeline.commands` and exposes `register(subparsers)`; errors of this project become
one readable line and a non-zero exit code."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .config import Settings, load_settings
from .errors import EosError
from .logs import setup_logging

log = logging.getLogger("eos_pipeline")

# Subcommand modules, in the order `--help` lists them.
COMMAND_MODULES = (
    "eos_pipeline.commands.migrate",
    "eos_pipeline.commands.run",
    "eos_pipeline.commands.produce",
    "eos_pipeline.commands.topics",
    "eos_pipeline.commands.views",
    "eos_pipeline.commands.replay",
    "eos_pipeline.commands.status",
)

EPILOG = """\
Settings come from, highest first: command-line flags, EOS_* environment variables
(EOS_KAFKA_BOOTSTRAP, EOS_DATABASE_URL, EOS_TOPIC, EOS_GROUP_ID), the TOML file given by
--config or EOS_CONFIG, then the defaults (the local devstack).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eos_pipeline",
        description="Exactly-once pipelines from Apache Kafka into PostgreSQL.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (or EOS_CONFIG)")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers")
    parser.add_argument("--database-url", metavar="URL", help="postgresql+psycopg://...")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    base = load_settings(args.config)
    return base.with_overrides(kafka_bootstrap=args.bootstrap, database_url=args.database_url)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        settings = settings_from(args)
        code: int = args.handler(args, settings)
        return code
    except EosError as exc:
        print(f"eos-pipeline: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
