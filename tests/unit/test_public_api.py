"""The package's public names."""

from __future__ import annotations

import tomllib
from pathlib import Path

import eos_pipeline


def test_every_public_name_exists() -> None:
    assert eos_pipeline.__all__, "the package declares its public names"
    missing = [name for name in eos_pipeline.__all__ if not hasattr(eos_pipeline, name)]
    assert missing == []


def test_public_names_are_unique_strings() -> None:
    names = eos_pipeline.__all__
    assert all(isinstance(n, str) for n in names)
    assert len(set(names)) == len(names)


def test_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from eos_pipeline import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(eos_pipeline.__all__)


def test_public_objects_are_usable() -> None:
    assert issubclass(eos_pipeline.EosError, Exception)
    settings = eos_pipeline.load_settings(None, env={})
    assert isinstance(settings, eos_pipeline.Settings)


def test_version_matches_pyproject() -> None:
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    version = tomllib.loads(pyproject.read_text())["project"]["version"]
    assert eos_pipeline.__version__ == version
