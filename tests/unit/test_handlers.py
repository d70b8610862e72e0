"""Handlers: the JSON deserializer, decoding records into events or dead letters, loading."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from eos_pipeline.errors import ConfigError
from eos_pipeline.events import DeadLetter, Event
from eos_pipeline.handlers import (
    DEFAULT_HANDLER,
    HandlerSpec,
    InvalidEvent,
    InvalidJson,
    UndecodableEvent,
    decode_record,
    json_deserializer,
    load_handler,
)
from eos_pipeline.writer import Writer

HEADERS = (("trace", b"abc"), ("empty", None))


def plain_handler(events: Sequence[Event], writer: Writer) -> None:
    return None


def decode(spec: HandlerSpec, raw: bytes | None) -> Event | DeadLetter:
    return decode_record(spec, "orders", 3, 77, b"k", raw, 1_700_000_000_000, HEADERS)


# -- json_deserializer -------------------------------------------------------------------------
def test_json_deserializer_decodes_json() -> None:
    assert json_deserializer(b'{"a": [1, 2.5, "x", null, true]}') == {
        "a": [1, 2.5, "x", None, True]
    }
    assert json_deserializer(b"3") == 3


def test_json_deserializer_tombstone() -> None:
    with pytest.raises(UndecodableEvent, match="tombstone") as info:
        json_deserializer(None)
    assert type(info.value) is UndecodableEvent
    assert info.value.error_class == "DecodeError"


def test_json_deserializer_not_utf8() -> None:
    with pytest.raises(UndecodableEvent, match="not UTF-8") as info:
        json_deserializer(b'"\xc3\x28"')
    assert type(info.value) is UndecodableEvent
    assert info.value.error_class == "DecodeError"


@pytest.mark.parametrize("raw", [b"", b"{", b"nope", b"[1,]"])
def test_json_deserializer_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidJson, match="not valid JSON") as info:
        json_deserializer(raw)
    assert info.value.error_class == "InvalidJson"


def test_error_class_hierarchy() -> None:
    assert issubclass(InvalidJson, UndecodableEvent)
    assert issubclass(UndecodableEvent, ValueError)
    assert issubclass(InvalidEvent, ValueError)
    assert not issubclass(InvalidEvent, UndecodableEvent)
    assert InvalidEvent.error_class == "ValidationError"


# -- decode_record -----------------------------------------------------------------------------
def test_good_record_becomes_an_event() -> None:
    result = decode(HandlerSpec.of(plain_handler), b'{"id": 1}')
    assert result == Event(
        "orders", 3, 77, b"k", {"id": 1}, b'{"id": 1}', 1_700_000_000_000, HEADERS
    )


@pytest.mark.parametrize(
    ("raw", "error_class"),
    [(None, "DecodeError"), (b"\xff\xfe", "DecodeError"), (b"{oops", "InvalidJson")],
)
def test_bad_record_becomes_a_dead_letter(raw: bytes | None, error_class: str) -> None:
    result = decode(HandlerSpec.of(plain_handler), raw)
    assert isinstance(result, DeadLetter)
    assert (result.topic, result.partition, result.offset) == ("orders", 3, 77)
    assert (result.key, result.value, result.headers) == (b"k", raw, HEADERS)
    assert result.error_class == error_class
    assert result.error_message


class CustomHandler:
    """A handler carrying its own deserializer and validator."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, events: Sequence[Event], writer: Writer) -> None:
        self.calls += 1

    @staticmethod
    def deserialize(raw: bytes | None) -> Any:
        if raw is None:
            raise UndecodableEvent("no value")
        if raw.startswith(b"boom"):
            raise RuntimeError("deserializer crashed")
        return raw.decode("ascii").upper()

    @staticmethod
    def validate(value: Any) -> None:
        if value == "BAD":
            raise InvalidEvent("value is BAD")
        if value == "CRASH":
            raise KeyError("missing")


def test_spec_picks_up_the_handlers_own_attributes() -> None:
    handler = CustomHandler()
    spec = HandlerSpec.of(handler, "my.mod:handler")
    assert spec.handle is handler
    assert spec.deserialize is CustomHandler.deserialize
    assert spec.validate is CustomHandler.validate
    assert spec.name == "my.mod:handler"


def test_spec_defaults() -> None:
    spec = HandlerSpec.of(plain_handler)
    assert spec.deserialize is json_deserializer
    assert spec.validate is None
    assert spec.name == "plain_handler"


def test_custom_deserializer_and_validator_are_used() -> None:
    spec = HandlerSpec.of(CustomHandler())
    good = decode(spec, b"fine")
    assert isinstance(good, Event)
    assert good.value == "FINE"
    assert good.raw == b"fine"


@pytest.mark.parametrize(
    ("raw", "error_class", "message"),
    [
        (None, "DecodeError", "no value"),
        (b"bad", "ValidationError", "value is BAD"),
        (b"boom!", "DecodeError", "RuntimeError: deserializer crashed"),
        (b"crash", "DecodeError", "KeyError: 'missing'"),
    ],
)
def test_custom_failures_become_dead_letters(
    raw: bytes | None, error_class: str, message: str
) -> None:
    result = decode(HandlerSpec.of(CustomHandler()), raw)
    assert isinstance(result, DeadLetter)
    assert (result.error_class, result.error_message) == (error_class, message)
    assert result.value == raw


def test_orders_handler_deserializer_is_the_orders_parser() -> None:
    from eos_pipeline.orders.schema import parse_order_event

    spec = load_handler(DEFAULT_HANDLER)
    assert spec.deserialize is parse_order_event
    assert spec.name == DEFAULT_HANDLER
    bad = decode(spec, b'{"type": "order_shipped"}')
    assert isinstance(bad, DeadLetter)
    assert bad.error_class == "ValidationError"


# -- load_handler ------------------------------------------------------------------------------
@pytest.fixture
def handler_module() -> Iterator[str]:
    name = "_eos_test_handlers_module"
    module = types.ModuleType(name)
    module.handle = plain_handler  # type: ignore[attr-defined]
    module.not_callable = 42  # type: ignore[attr-defined]
    module.ns = types.SimpleNamespace(inner=CustomHandler())  # type: ignore[attr-defined]
    sys.modules[name] = module
    yield name
    del sys.modules[name]


def test_load_handler_resolves_a_function(handler_module: str) -> None:
    spec = load_handler(f"{handler_module}:handle")
    assert spec.handle is plain_handler
    assert spec.name == f"{handler_module}:handle"


def test_load_handler_resolves_a_dotted_attribute(handler_module: str) -> None:
    spec = load_handler(f"{handler_module}:ns.inner")
    assert isinstance(spec.handle, CustomHandler)
    assert spec.validate is CustomHandler.validate


@pytest.mark.parametrize(
    "path", ["no_colon_here", "module:", ":attr", "", "eos_pipeline.orders.handler"]
)
def test_load_handler_bad_path_format(path: str) -> None:
    with pytest.raises(ConfigError, match=r"package\.module:callable"):
        load_handler(path)


def test_load_handler_missing_module() -> None:
    with pytest.raises(ConfigError, match="cannot import handler module"):
        load_handler("eos_pipeline_no_such_module_xyz:handle")


def test_load_handler_missing_attribute(handler_module: str) -> None:
    with pytest.raises(ConfigError, match="has no attribute"):
        load_handler(f"{handler_module}:nothing_here")
    with pytest.raises(ConfigError, match="has no attribute"):
        load_handler(f"{handler_module}:ns.missing")


def test_load_handler_not_callable(handler_module: str) -> None:
    with pytest.raises(ConfigError, match="is not callable"):
        load_handler(f"{handler_module}:not_callable")


def test_config_errors_exit_with_code_2() -> None:
    with pytest.raises(ConfigError) as info:
        load_handler("bad")
    assert info.value.exit_code == 2
