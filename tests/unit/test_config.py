"""Settings from defaults, a TOML file and EOS_* variables; database URL masking and conninfo."""

from __future__ import annotations

from pathlib import Path

import pytest

from eos_pipeline.config import (
    DEFAULT_DATABASE_URL,
    DEFAULT_KAFKA_BOOTSTRAP,
    Settings,
    load_settings,
)
from eos_pipeline.db import conninfo, mask_url, parse_url, sqlalchemy_url
from eos_pipeline.errors import ConfigError


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    return tmp_path / "eos.toml"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- load_settings -----------------------------------------------------------------------------
def test_defaults_without_file_or_env() -> None:
    s = load_settings(None, env={})
    assert s == Settings()
    assert s.kafka_bootstrap == DEFAULT_KAFKA_BOOTSTRAP
    assert s.database_url == DEFAULT_DATABASE_URL
    assert s.topics == ("orders",)
    assert s.group_id == "eos-pipeline"
    assert s.kafka_config == {}


def test_file_values(toml: Path) -> None:
    write(
        toml,
        """
kafka_bootstrap = "k1:9092"
database-url = "postgresql://u:p@db/x"
topics = ["a", " b "]
group_id = "g-file"
""",
    )
    s = load_settings(toml, env={})
    assert s.kafka_bootstrap == "k1:9092"
    assert s.database_url == "postgresql://u:p@db/x"
    assert s.topics == ("a", "b")
    assert s.group_id == "g-file"


def test_env_values() -> None:
    env = {
        "EOS_KAFKA_BOOTSTRAP": "k2:9092",
        "EOS_DATABASE_URL": "postgresql://e@db/e",
        "EOS_TOPIC": "x, y,,z",
        "EOS_GROUP_ID": "g-env",
    }
    s = load_settings(None, env=env)
    assert (s.kafka_bootstrap, s.database_url, s.topics, s.group_id) == (
        "k2:9092",
        "postgresql://e@db/e",
        ("x", "y", "z"),
        "g-env",
    )


def test_precedence_env_over_file_over_defaults(toml: Path) -> None:
    write(toml, 'kafka_bootstrap = "from-file:1"\ngroup_id = "g-file"\n')
    s = load_settings(toml, env={"EOS_GROUP_ID": "g-env"})
    assert s.group_id == "g-env"  # env beats file
    assert s.kafka_bootstrap == "from-file:1"  # file beats default
    assert s.database_url == DEFAULT_DATABASE_URL  # default where nobody says otherwise


def test_empty_env_value_does_not_override(toml: Path) -> None:
    write(toml, 'group_id = "g-file"\n')
    assert load_settings(toml, env={"EOS_GROUP_ID": ""}).group_id == "g-file"


def test_config_file_from_env(toml: Path) -> None:
    write(toml, 'group_id = "via-env-path"\n')
    assert load_settings(None, env={"EOS_CONFIG": str(toml)}).group_id == "via-env-path"


def test_explicit_file_wins_over_eos_config(toml: Path, tmp_path: Path) -> None:
    write(toml, 'group_id = "explicit"\n')
    other = write(tmp_path / "other.toml", 'group_id = "other"\n')
    assert load_settings(toml, env={"EOS_CONFIG": str(other)}).group_id == "explicit"


def test_load_settings_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EOS_CONFIG", raising=False)
    monkeypatch.setenv("EOS_GROUP_ID", "from-os-environ")
    assert load_settings().group_id == "from-os-environ"


@pytest.mark.parametrize("key", ["unknown", "kafka_bootstrapp", "group"])
def test_unknown_keys_are_rejected(toml: Path, key: str) -> None:
    write(toml, f'{key} = "x"\n')
    with pytest.raises(ConfigError, match=f"unknown key '{key}'"):
        load_settings(toml, env={})


def test_kafka_table_under_its_attribute_name(toml: Path) -> None:
    # the file spells it [kafka]; "kafka_config", the attribute name, is accepted too
    write(toml, '[kafka_config]\n"acks" = "all"\n')
    assert load_settings(toml, env={}).kafka_config == {"acks": "all"}


def test_kafka_table(toml: Path) -> None:
    write(
        toml,
        """
[kafka]
"session.timeout.ms" = 45000
"security.protocol" = "SASL_SSL"
"enable.partition.eof" = false
""",
    )
    assert load_settings(toml, env={}).kafka_config == {
        "session.timeout.ms": "45000",
        "security.protocol": "SASL_SSL",
        "enable.partition.eof": "False",
    }


def test_kafka_table_with_unquoted_dotted_keys(toml: Path) -> None:
    write(toml, '[kafka]\nsession.timeout.ms = 45000\nsasl.mechanism = "PLAIN"\n')
    assert load_settings(toml, env={}).kafka_config == {
        "session.timeout.ms": "45000",
        "sasl.mechanism": "PLAIN",
    }


def test_kafka_must_be_a_table(toml: Path) -> None:
    write(toml, 'kafka = "acks=all"\n')
    with pytest.raises(ConfigError, match=r"\[kafka\] must be a table"):
        load_settings(toml, env={})


@pytest.mark.parametrize("text", ["topics = []\n", 'topics = ", ,"\n'])
def test_at_least_one_topic(toml: Path, text: str) -> None:
    write(toml, text)
    with pytest.raises(ConfigError, match="at least one topic"):
        load_settings(toml, env={})


def test_topic_env_of_only_separators_is_rejected() -> None:
    with pytest.raises(ConfigError, match="at least one topic"):
        load_settings(None, env={"EOS_TOPIC": " , "})


@pytest.mark.parametrize("text", ['group_id = ""\n', "group_id = 5\n", "kafka_bootstrap = []\n"])
def test_string_settings_must_be_non_empty_strings(toml: Path, text: str) -> None:
    write(toml, text)
    with pytest.raises(ConfigError, match="must be a non-empty string"):
        load_settings(toml, env={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml", env={})


def test_invalid_toml(toml: Path) -> None:
    write(toml, "group_id = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(toml, env={})


def test_with_overrides() -> None:
    s = Settings().with_overrides(group_id="g2", topics=None)
    assert s.group_id == "g2"
    assert s.topics == ("orders",)  # None means "not given"
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings().with_overrides(nonsense=1)


# -- db: mask_url / conninfo / parse_url -------------------------------------------------------
SECRET = "s3cret"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"postgresql+psycopg://eos:{SECRET}@127.0.0.1:15432/eos",
            "postgresql+psycopg://eos:***@127.0.0.1:15432/eos",
        ),
        (
            f"postgresql://u:{SECRET}@h/db?sslmode=require",
            "postgresql://u:***@h/db?sslmode=require",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_mask_url_of_parsable_urls(url: str, expected: str) -> None:
    assert mask_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{SECRET}@h:5432/db",
        f"postgresql://u:{SECRET}%40x@h/db",  # percent-encoded
        f"postgresql://:{SECRET}@h/db",
        f"postgres ql://u:{SECRET}@h/db",  # does not parse: bad scheme
        f"postgresql://u:{SECRET}/x@h/db",  # does not parse: raw "/" in the password
        f"postgresql://u:{SECRET}@h:notaport/db",  # does not parse: port is no number
        f"postgresql://u:p@{SECRET}@h/db",  # raw "@" in the password
        f"postgresql://u@h/db?password={SECRET}",
        f"postgresql://u@h/db?sslmode=require&password={SECRET}&connect_timeout=3",
        f"host=h user=u password={SECRET} dbname=db",
        f"host=h password='{SECRET} x' dbname=db",
    ],
)
def test_mask_url_never_shows_the_password(url: str) -> None:
    masked = mask_url(url)
    assert SECRET not in masked
    assert "***" in masked


def test_mask_url_keeps_user_and_host_of_unparsable_urls() -> None:
    assert mask_url(f"postgresql://u:{SECRET}/x@h/db") == "postgresql://u:***@h/db"


def test_mask_url_of_text_without_credentials_is_unchanged() -> None:
    assert mask_url("not a url") == "not a url"


def test_conninfo_drops_the_driver() -> None:
    assert (
        conninfo(f"postgresql+psycopg://eos:{SECRET}@127.0.0.1:15432/eos")
        == f"postgresql://eos:{SECRET}@127.0.0.1:15432/eos"
    )
    assert conninfo("postgresql://u@h/db?sslmode=require") == "postgresql://u@h/db?sslmode=require"


def test_sqlalchemy_url_always_uses_psycopg3() -> None:
    assert sqlalchemy_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert sqlalchemy_url("postgresql+psycopg2://u:p@h/db") == "postgresql+psycopg://u:p@h/db"


@pytest.mark.parametrize(
    "url", [f"mysql://u:{SECRET}@h/db", f"postgresql://u:{SECRET}@h:notaport/db"]
)
def test_parse_url_rejects_with_a_masked_message(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_url(url)
    assert SECRET not in str(info.value)
    assert "u:***@h" in str(info.value)


def test_parse_url_rejects_what_is_no_url() -> None:
    with pytest.raises(ConfigError, match="not a database URL"):
        parse_url("just words")
