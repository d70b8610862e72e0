"""Every option from flag > EOS_* environment > TOML table > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from eos_pipeline.cli import parse
from eos_pipeline.errors import ConfigError


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    path = tmp_path / "eos.toml"
    path.write_text(
        'log_level = "WARNING"\n'
        'group_id = "from-file"\n'
        '[run]\nbatch_size = 123\nassignor = "range"\nno_view_refresh = true\n'
        "[kafka]\nsession.timeout.ms = 6000\n"
    )
    return str(path)


def test_defaults_without_file_or_env() -> None:
    args, settings = parse(["run"], env={})
    assert (args.batch_size, args.assignor, args.start, args.topic) == (
        5000,
        "cooperative-sticky",
        "earliest",
        None,
    )
    assert args.no_view_refresh is False
    assert settings.topics == ("orders",) and settings.group_id == "eos-pipeline"


def test_file_fills_what_flags_and_env_leave(config_file: str) -> None:
    args, settings = parse(["--config", config_file, "run"], env={})
    assert (args.batch_size, args.assignor, args.no_view_refresh) == (123, "range", True)
    assert args.log_level == "WARNING"
    assert settings.group_id == "from-file"
    assert settings.kafka_config == {"session.timeout.ms": "6000"}


def test_env_beats_file_and_flag_beats_env(config_file: str) -> None:
    env = {"EOS_BATCH_SIZE": "77", "EOS_ASSIGNOR": "roundrobin", "EOS_GROUP_ID": "from-env"}
    args, settings = parse(["--config", config_file, "run", "--batch-size", "5000"], env=env)
    assert args.batch_size == 5000  # the flag, though it equals the default
    assert args.assignor == "roundrobin"
    assert settings.group_id == "from-env"


def test_repeatable_options_split_on_commas() -> None:
    args, settings = parse(["run"], env={"EOS_TOPIC": "a,b", "EOS_KAFKA_CONFIG": "x=1,y=2"})
    assert args.topic == ["a", "b"] and settings.topics == ("a", "b")
    assert args.kafka_config == ["x=1", "y=2"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EOS_BATCH_SIZE": "many"}, "EOS_BATCH_SIZE"),
        ({"EOS_START": "middle"}, "not one of"),
        ({"EOS_NO_VIEW_REFRESH": "perhaps"}, "true or false"),
    ],
)
def test_bad_values_name_their_source(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(["run"], env=env)


def test_unknown_keys_in_a_command_table_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[run]\nbatch_sise = 10\n")
    with pytest.raises(ConfigError, match="batch_sise"):
        parse(["--config", str(path), "run"], env={})
