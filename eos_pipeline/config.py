"""Settings: one frozen object, validated once, read from flags > EOS_* env > TOML > defaults."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:19092"
DEFAULT_DATABASE_URL = "postgresql+psycopg://eos:eos@127.0.0.1:15432/eos"


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = DEFAULT_KAFKA_BOOTSTRAP
    database_url: str = DEFAULT_DATABASE_URL
    topics: tuple[str, ...] = ("orders",)
    group_id: str = "eos-pipeline"
    kafka_config: Mapping[str, str] = field(default_factory=dict)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the given (non-None) values replaced."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


_ENV = {
    "kafka_bootstrap": "EOS_KAFKA_BOOTSTRAP",
    "database_url": "EOS_DATABASE_URL",
    "topics": "EOS_TOPIC",
    "group_id": "EOS_GROUP_ID",
}


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """librdkafka settings from a TOML table: unquoted dotted keys (`session.timeout.ms = 1`)
    are nested tables in TOML, joined back into their dotted names here."""
    out: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def _coerce(name: str, value: Any) -> Any:
    if name == "topics":
        items = value.split(",") if isinstance(value, str) else list(value)
        topics = tuple(t.strip() for t in items if str(t).strip())
        if not topics:
            raise ConfigError("at least one topic is needed")
        return topics
    if name == "kafka_config":
        if not isinstance(value, Mapping):
            raise ConfigError("[kafka] must be a table of librdkafka settings")
        return _flatten(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"setting {name!r} must be a non-empty string")
    return value


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    other_keys: frozenset[str] = frozenset(),
) -> Settings:
    """Defaults, then the TOML file (if any), then EOS_* variables; flags are applied later.
    `other_keys` are top-level keys of the file that belong to someone else (command tables)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or env.get("EOS_CONFIG")
    if path:
        known = {f.name for f in fields(Settings)}
        for key, value in read_config_file(path).items():
            name = "kafka_config" if key == "kafka" else key.replace("-", "_")
            if name in other_keys:
                continue
            if name not in known:
                raise ConfigError(f"unknown key {key!r} in {path}")
            values[name] = _coerce(name, value)
    for name, var in _ENV.items():
        if env.get(var):
            values[name] = _coerce(name, env[var])
    return Settings(**values)
