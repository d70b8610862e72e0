"""Pure decisions of the transactional producer, the produce command and the stage."""

from __future__ import annotations

import argparse
import io

import orjson
import pytest
from confluent_kafka import KafkaError as RdKafkaError

from eos_pipeline.commands.produce import check_args, file_lines, read_batch
from eos_pipeline.commands.topics import parse_topic_config
from eos_pipeline.errors import ConfigError
from eos_pipeline.producer import (
    ErrorClass,
    backoff_s,
    classify,
    default_transactional_id,
    extract_key,
    producer_config,
)
from eos_pipeline.shutdown import StopRequest
from eos_pipeline.stage import (
    BatchOffsets,
    check_stage,
    enrich_event,
    enrich_orders,
    load_stage_handler,
    stage_options,
    to_record,
)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RdKafkaError(RdKafkaError._FENCED), ErrorClass.FENCED),
        (RdKafkaError(RdKafkaError.PRODUCER_FENCED, fatal=True), ErrorClass.FENCED),
        (RdKafkaError(RdKafkaError.INVALID_PRODUCER_EPOCH), ErrorClass.FENCED),
        (RdKafkaError(RdKafkaError._TIMED_OUT, fatal=True, retriable=True), ErrorClass.FATAL),
        (
            RdKafkaError(RdKafkaError._TIMED_OUT, retriable=True, txn_requires_abort=True),
            ErrorClass.ABORT,
        ),
        (RdKafkaError(RdKafkaError._TIMED_OUT, retriable=True), ErrorClass.RETRY),
        (RdKafkaError(RdKafkaError._MSG_TIMED_OUT), ErrorClass.FATAL),
    ],
)
def test_error_classes_in_the_order_that_decides(error: RdKafkaError, expected: ErrorClass) -> None:
    assert classify(error) is expected


def test_backoff_grows_and_is_capped() -> None:
    delays = [backoff_s(n) for n in range(10)]
    assert delays == sorted(delays) and delays[0] == 0.1 and max(delays) == 5.0


@pytest.mark.parametrize(
    ("value", "field", "key"),
    [
        (b'{"order_id": "o-1", "x": 2}', "order_id", b"o-1"),
        (b'{"order_id": 17}', "order_id", b"17"),
        (b'{"other": 1}', "order_id", None),
        (b'{"order_id": null}', "order_id", None),
        (b"[1, 2]", "order_id", None),
        (b"\xff\xfe", "order_id", None),
        (b'{"order_id": "o-1"}', None, None),
    ],
)
def test_key_is_a_field_of_the_json_value(value: bytes, field: str | None, key: bytes) -> None:
    assert extract_key(value, field) == key


def test_message_timeout_stays_below_the_transaction_timeout() -> None:
    conf = producer_config("b:1", "tid")
    assert conf["partitioner"] == "murmur2_random"
    assert int(conf["message.timeout.ms"]) < int(conf["transaction.timeout.ms"])
    lowered = producer_config("b:1", "tid", extra={"transaction.timeout.ms": "10000"})
    assert int(lowered["message.timeout.ms"]) < 10_000
    with pytest.raises(ConfigError, match=r"message\.timeout\.ms"):
        producer_config("b:1", "tid", extra={"message.timeout.ms": "90000"})


def test_transactional_id_is_stable_per_instance() -> None:
    assert default_transactional_id("produce", "orders", "host1") == "eos-produce.orders.host1"
    assert default_transactional_id("produce", "orders") == default_transactional_id(
        "produce", "orders"
    )


def produce_args(**overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "batch_size": 10,
        "skip": 0,
        "generate": None,
        "orders": 5,
        "poison_rate": 0.0,
    }
    return argparse.Namespace(**{**values, **overrides})


@pytest.mark.parametrize(
    "bad", [{"batch_size": 0}, {"skip": -1}, {"generate": -5}, {"orders": 0}, {"poison_rate": 2}]
)
def test_produce_rejects_bad_arguments(bad: dict[str, object]) -> None:
    check_args(produce_args())
    with pytest.raises(ConfigError):
        check_args(produce_args(**bad))


def test_batches_of_lines_keep_blank_lines_as_input() -> None:
    lines = file_lines(io.BytesIO(b'{"a": 1}\r\n\n{"b": 2}\n{"c": 3}'))
    with StopRequest() as stop:
        first, more = read_batch(lines, 2, stop)
        second, done = read_batch(lines, 2, stop)
    assert first == [(None, b'{"a": 1}'), (None, b"")] and more
    assert second == [(None, b'{"b": 2}'), (None, b'{"c": 3}')] and done
    assert read_batch(iter([]), 2, StopRequest()) == ([], False)


def test_topic_config_pairs() -> None:
    assert parse_topic_config(["retention.ms=1000", " a = b "]) == {
        "retention.ms": "1000",
        "a": "b",
    }
    with pytest.raises(ConfigError):
        parse_topic_config(["novalue"])


def test_item_added_gains_a_line_total_and_the_rest_passes_unchanged() -> None:
    item = {"type": "item_added", "order_id": "o", "quantity": 3, "unit_price": "2.50"}
    assert enrich_event(item) == {**item, "line_total": "7.50"}
    assert enrich_event({"type": "order_paid", "amount": "1.00"}) is None
    for bad in ({"quantity": 0}, {"quantity": True}, {"unit_price": "1.2.3"}, {"unit_price": 5}):
        assert enrich_event({**item, **bad}) is None
    assert enrich_event({**item, "unit_price": "NaN"}) is None


def test_undecodable_input_passes_through_as_is() -> None:
    assert enrich_orders(b"k", b"\xff\xfe") == [(b"k", b"\xff\xfe")]
    assert enrich_orders(None, None) == [(None, None)]
    [(key, value)] = enrich_orders(b"o", b'{"type":"item_added","quantity":2,"unit_price":"1.25"}')
    assert key == b"o" and orjson.loads(value or b"")["line_total"] == "2.50"


def test_batch_offsets_commit_the_next_and_rewind_to_the_start() -> None:
    batch = BatchOffsets()
    assert not batch.due(2, 1.0, now=100.0)
    batch.note(("t", 1), 10, now=100.0)
    batch.note(("t", 0), 5, now=100.1)
    batch.note(("t", 1), 12, now=100.2)
    assert [(tp.partition, tp.offset) for tp in batch.commit_offsets()] == [(0, 6), (1, 13)]
    assert [(tp.partition, tp.offset) for tp in batch.rewind_offsets()] == [(0, 5), (1, 10)]
    assert batch.due(3, 60.0, now=100.3)
    assert not batch.due(10, 1.0, now=100.5) and batch.due(10, 1.0, now=101.0)


def test_output_records_are_pairs_or_mappings() -> None:
    assert to_record((b"k", b"v"), orjson.dumps) == (b"k", b"v")
    assert to_record({"order_id": "o"}, orjson.dumps) == (None, b'{"order_id":"o"}')


def test_stage_arguments() -> None:
    assert check_stage("out", ["in"]) == "out"
    with pytest.raises(ConfigError, match="needs --output-topic"):
        check_stage(None, ["in"])
    with pytest.raises(ConfigError, match="loop"):
        check_stage("in", ["in"])
    opts = stage_options(argparse.Namespace(batch_size=7, batch_timeout_ms=250), "out")
    assert (opts.batch_size, opts.batch_seconds, opts.idle_exit_s) == (7, 0.25, None)
    assert stage_options(argparse.Namespace(), "out").batch_size > 0


def test_stage_handler_spec() -> None:
    assert load_stage_handler("eos_pipeline.stage:enrich_orders") is enrich_orders
    for bad in ("nope.nothing:x", "eos_pipeline.stage:missing", "eos_pipeline.stage:log"):
        with pytest.raises(ConfigError):
            load_stage_handler(bad)
