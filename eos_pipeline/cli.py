"""Command line: `python -m eos_pipeline SUBCOMMAND`. Each subcommand lives in its own module
under `eos_pipeline.commands` and exposes `register(subparsers)`; errors of this project become
one readable line and a non-zero exit code."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from .config import Settings, load_settings, read_config_file
from .errors import ConfigError, EosError
from .logs import setup_logging
from .options import defer_defaults, resolve

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
Every option comes from, highest first: the command-line flag; an EOS_* environment variable
named after it (--batch-size -> EOS_BATCH_SIZE; also EOS_KAFKA_BOOTSTRAP, EOS_DATABASE_URL,
EOS_TOPIC, EOS_GROUP_ID, EOS_HANDLER); the TOML file given by --config or EOS_CONFIG (top-level
kafka_bootstrap, database_url, topics, group_id, log_level, log_format, a [kafka] table of
librdkafka settings, and one table per command: [run] batch_size = 2000); then the default
(the local devstack).
"""
_TOP_LEVEL_LAYERED = frozenset({"log_level", "log_format"})


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


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands' parsers, by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def parse(
    argv: Sequence[str] | None, env: Mapping[str, str] | None = None
) -> tuple[argparse.Namespace, Settings]:
    """Flags, then EOS_* variables, then the TOML file, then defaults, for every option."""
    env = os.environ if env is None else env
    parser = build_parser()
    top_defaults = defer_defaults(parser, _TOP_LEVEL_LAYERED)
    commands = _commands(parser)
    sub_defaults = {name: defer_defaults(p) for name, p in commands.items()}
    args = parser.parse_args(argv)
    path = args.config or env.get("EOS_CONFIG")
    data = read_config_file(path) if path else {}
    table = data.get(args.command, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{args.command}] in {path} must be a table")
    resolve(
        parser,
        args,
        top_defaults,
        env,
        {k: data[k] for k in _TOP_LEVEL_LAYERED if k in data},
        "top level",
    )
    resolve(commands[args.command], args, sub_defaults[args.command], env, table, args.command)
    settings = load_settings(
        args.config, env, other_keys=frozenset(commands) | _TOP_LEVEL_LAYERED
    ).with_overrides(kafka_bootstrap=args.bootstrap, database_url=args.database_url)
    return args, settings


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args, settings = parse(argv)
        setup_logging(args.log_level, args.log_format)
        code: int = args.handler(args, settings)
        return code
    except EosError as exc:
        print(f"eos-pipeline: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
