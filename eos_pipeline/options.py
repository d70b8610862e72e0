"""Every command-line option can also come from the environment or the TOML file.

Precedence, highest first: the flag, `EOS_<FLAG>` (e.g. `--batch-size` -> EOS_BATCH_SIZE), the
command's table in the file (`[run] batch_size = 2000`), then the flag's default. Options are
left unset while parsing so that an explicit flag equal to the default still wins.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError

# Variables whose names predate the flag-derived rule.
ENV_ALIASES = {"--group": "EOS_GROUP_ID", "--handler": "EOS_HANDLER"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


def _long_flag(action: argparse.Action) -> str | None:
    longs = [o for o in action.option_strings if o.startswith("--")]
    return longs[0] if longs else None


def _layerable(
    parser: argparse.ArgumentParser, only: frozenset[str] | None = None
) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if _long_flag(a)
        and not isinstance(a, argparse._HelpAction | argparse._VersionAction)
        and not a.required
        and (only is None or a.dest in only)
    ]


def defer_defaults(
    parser: argparse.ArgumentParser, only: frozenset[str] | None = None
) -> dict[str, Any]:
    """Replace the defaults of the parser's options by UNSET (None for repeatable ones, which
    argparse appends to); returns dest -> real default."""
    defaults: dict[str, Any] = {}
    for action in _layerable(parser, only):
        defaults[action.dest] = action.default
        action.default = None if isinstance(action, argparse._AppendAction) else UNSET
    return defaults


def _unset(action: argparse.Action, value: Any) -> bool:
    return value is None if isinstance(action, argparse._AppendAction) else value is UNSET


def env_name(flag: str) -> str:
    return ENV_ALIASES.get(flag, "EOS_" + flag.lstrip("-").replace("-", "_").upper())


def _convert(action: argparse.Action, value: Any, where: str) -> Any:
    if action.nargs == 0:  # store_true / store_false
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return (text in _TRUE) == bool(action.const)
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if isinstance(action, argparse._AppendAction):
        items = value.split(",") if isinstance(value, str) else list(value)
        return [_scalar(action, item, where) for item in items if str(item).strip()]
    return _scalar(action, value, where)


def _scalar(action: argparse.Action, value: Any, where: str) -> Any:
    try:
        converted = (
            action.type(value if isinstance(value, str) else str(value))
            if callable(action.type)
            else (value.strip() if isinstance(value, str) else value)
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: invalid value {value!r} ({exc})") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{where}: {value!r} is not one of {choices}")
    return converted


def resolve(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    defaults: Mapping[str, Any],
    env: Mapping[str, str],
    table: Mapping[str, Any],
    table_name: str,
) -> None:
    """Fill every option still unset from env, then the file's table, then its default."""
    by_key = {}
    for action in _layerable(parser, frozenset(defaults)):
        flag = _long_flag(action)
        assert flag is not None
        key = flag.lstrip("-").replace("-", "_")
        by_key[key] = action
        if not _unset(action, getattr(args, action.dest, None)):
            continue
        var = env_name(flag)
        if env.get(var, "") != "":
            value = _convert(action, env[var], var)
        elif key in table:
            value = _convert(action, table[key], f"[{table_name}] {key}")
        else:
            value = defaults.get(action.dest)
        setattr(args, action.dest, value)
    unknown = sorted(set(table) - set(by_key))
    if unknown:
        raise ConfigError(f"unknown key(s) in [{table_name}]: {', '.join(unknown)}")
