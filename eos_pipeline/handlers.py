"""Handlers: user code that turns a batch of events into writes.

A handler is any callable `handler(events, writer)`. It may carry two optional attributes:
`deserialize(raw: bytes | None) -> value` (JSON via orjson by default) and
`validate(value) -> None` raising `InvalidEvent`. Records failing either become dead letters
before the handler sees the batch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from .errors import ConfigError
from .events import DeadLetter, Event, Headers, make_event

if TYPE_CHECKING:
    from .writer import Writer

DEFAULT_HANDLER = "eos_pipeline.orders.handler:handle_orders"


class InvalidEvent(ValueError):
    """Raised by a validator: the record is well-formed but breaks the domain's rules."""

    error_class = "ValidationError"


class UndecodableEvent(ValueError):
    """Raised by a deserializer: the bytes are not a record of the expected format."""

    error_class = "DecodeError"


class InvalidJson(UndecodableEvent):
    error_class = "InvalidJson"


class Handler(Protocol):
    def __call__(self, events: Sequence[Event], writer: Writer) -> None: ...


Deserializer = Callable[[bytes | None], Any]
Validator = Callable[[Any], None]


def json_deserializer(raw: bytes | None) -> Any:
    if raw is None:
        raise UndecodableEvent("record has no value (tombstone)")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "UTF-8" in str(exc):
            raise UndecodableEvent(f"value is not UTF-8 text: {exc}") from None
        raise InvalidJson(f"value is not valid JSON: {exc}") from None


@dataclass(frozen=True)
class HandlerSpec:
    """A handler with its resolved deserializer and validator."""

    handle: Handler
    deserialize: Deserializer
    validate: Validator | None
    name: str

    @classmethod
    def of(cls, handler: Handler, name: str | None = None) -> HandlerSpec:
        return cls(
            handle=handler,
            deserialize=getattr(handler, "deserialize", json_deserializer),
            validate=getattr(handler, "validate", None),
            name=name or str(getattr(handler, "__qualname__", repr(handler))),
        )


def load_handler(path: str = DEFAULT_HANDLER) -> HandlerSpec:
    """Import `package.module:callable`."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--handler must look like package.module:callable, got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import handler module {module_name!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"handler {path!r}: {module_name} has no attribute {attr!r}")
    if not callable(obj):
        raise ConfigError(f"handler {path!r} is not callable")
    return HandlerSpec.of(obj, path)


def decode_record(
    spec: HandlerSpec,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    raw: bytes | None,
    timestamp_ms: int,
    headers: Headers,
) -> Event | DeadLetter:
    """Deserialize and validate one record; failures become dead letters, never exceptions."""
    try:
        value = spec.deserialize(raw)
        if spec.validate is not None:
            spec.validate(value)
    except (UndecodableEvent, InvalidEvent) as exc:
        return DeadLetter(topic, partition, offset, key, raw, headers, exc.error_class, str(exc))
    except Exception as exc:
        return DeadLetter(
            topic,
            partition,
            offset,
            key,
            raw,
            headers,
            "DecodeError",
            f"{type(exc).__name__}: {exc}",
        )
    return make_event((topic, partition, offset, key, value, raw, timestamp_ms, headers))
