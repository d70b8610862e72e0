"""View definitions, registry and delta pre-aggregation: pure decisions, no database."""

from __future__ import annotations

from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest

from eos_pipeline.errors import ConfigError, UnknownView
from eos_pipeline.views import (
    BUILTIN_VIEWS,
    ORDER_STATUS_COUNTS,
    IncrementalView,
    MaterializedView,
    RefreshPolicy,
    after_batches,
    aggregate_deltas,
    every,
    load_registry,
)
from eos_pipeline.views import __all__ as public_names
from eos_pipeline.views.deltas import flatten, upsert_statement
from eos_pipeline.views.incremental import rebuild_statements, summing_view_statement
from eos_pipeline.views.registry import ViewRegistry, modules_from_env


def test_public_api_is_importable() -> None:
    import eos_pipeline.views as views

    assert all(hasattr(views, name) for name in public_names)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "Bad-Name"},
        {"unique_key": ()},
        {"unique_key": ("a", "a")},
        {"sql": "SELECT 1;"},
        {"sql": "  "},
    ],
)
def test_materialized_view_rejects_bad_definitions(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"name": "v", "sql": "SELECT 1 AS a", "unique_key": ("a",)}
    with pytest.raises(ValueError):
        MaterializedView(**{**base, **kwargs})  # type: ignore[arg-type]


def test_incremental_view_defaults_its_table_and_rejects_overlaps() -> None:
    view = IncrementalView("s", ("k",), ("n",), "SELECT k, count(*) FROM t GROUP BY k")
    assert view.table == "s" and view.columns == ("k", "n")
    with pytest.raises(ValueError):
        IncrementalView("s", ("k",), ("k",), "SELECT 1")


def test_refresh_policies() -> None:
    assert RefreshPolicy().manual and RefreshPolicy().describe() == "manual"
    assert every(5).describe() == "every 5 s"
    both = RefreshPolicy(every_seconds=2.5, every_batches=10)
    assert not both.manual and both.describe() == "every 2.5 s or after 10 batches"
    with pytest.raises(ValueError):
        after_batches(0)
    with pytest.raises(ValueError):
        every(0)


def test_aggregate_deltas_sums_per_key_drops_zero_and_sorts() -> None:
    deltas = [
        (("paid",), (1,)),
        (("created",), (-1,)),
        (("paid",), (1,)),
        (("created",), (1,)),
        (("cancelled",), (1,)),
    ]
    assert aggregate_deltas(deltas, 1, 1) == [(("cancelled",), (1,)), (("paid",), (2,))]


def test_aggregate_deltas_keeps_decimal_counters_exact() -> None:
    deltas = [(("a", 1), (1, Decimal("0.10"))), (("a", 1), (1, Decimal("0.20")))]
    assert aggregate_deltas(deltas, 2, 2) == [(("a", 1), (2, Decimal("0.30")))]


def test_aggregate_deltas_rejects_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match="1 key value"):
        aggregate_deltas([(("a", "b"), (1,))], 1, 1)


def test_upsert_is_one_statement_adding_each_counter() -> None:
    text = upsert_statement("order_status_counts", ("status",), ("orders",), 2).as_string()
    assert text == (
        'INSERT INTO "order_status_counts" ("status", "orders") VALUES (%s, %s), (%s, %s)'
        ' ON CONFLICT ("status") DO UPDATE SET'
        ' "orders" = "order_status_counts"."orders" + EXCLUDED."orders"'
    )
    assert flatten([(("a",), (1,)), (("b",), (2,))]) == ["a", 1, "b", 2]


def test_registry_knows_the_builtin_views_and_names_the_unknown() -> None:
    registry = load_registry()
    assert registry.names() == (
        "customer_order_totals",
        "revenue_by_hour",
        "order_status_counts",
    )
    assert registry.get("order_status_counts") is ORDER_STATUS_COUNTS
    assert [v.name for v in registry.incremental()] == ["order_status_counts"]
    with pytest.raises(UnknownView, match="unknown view 'nope' \\(known: customer_order_totals"):
        registry.get("nope")


def test_registry_rejects_duplicates() -> None:
    with pytest.raises(ConfigError, match="declared twice"):
        ViewRegistry([*BUILTIN_VIEWS, BUILTIN_VIEWS[0]])


def _install(monkeypatch: pytest.MonkeyPatch, name: str, **attrs: object) -> None:
    module = ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(__import__("sys").modules, name, module)


def test_user_modules_add_views(monkeypatch: pytest.MonkeyPatch) -> None:
    mine = MaterializedView("mine", "SELECT 1 AS a", ("a",))
    _install(monkeypatch, "user_views_ok", VIEWS=[mine])
    registry = load_registry(["user_views_ok", "user_views_ok"])
    assert registry.get("mine") is mine and len(registry) == len(BUILTIN_VIEWS) + 1


@pytest.mark.parametrize(
    ("attrs", "message"),
    [({}, "has no VIEWS"), ({"VIEWS": "x"}, "must be a sequence"), ({"VIEWS": [1]}, "holds 1")],
)
def test_bad_user_modules_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, attrs: dict[str, object], message: str
) -> None:
    _install(monkeypatch, "user_views_bad", **attrs)
    with pytest.raises(ConfigError, match=message):
        load_registry(["user_views_bad"])


def test_missing_user_module_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot import views module 'no_such_views_mod'"):
        load_registry(["no_such_views_mod"])


def test_modules_from_env() -> None:
    assert modules_from_env({"EOS_VIEWS_MODULES": " a.b , ,c "}) == ("a.b", "c")
    assert modules_from_env({}) == ()


# -- sharded incremental views --------------------------------------------------------------------
def _sharded(**changes: Any) -> IncrementalView:
    fields: dict[str, Any] = {
        "name": "counts",
        "key_columns": ("status",),
        "counter_columns": ("n",),
        "rebuild_sql": "SELECT status, count(*) FROM t GROUP BY status",
        "table": "count_shards",
        "shard_column": "shard",
    }
    return IncrementalView(**{**fields, **changes})


def test_a_sharded_view_keys_its_table_by_key_then_shard() -> None:
    view = _sharded()
    assert view.sharded and ORDER_STATUS_COUNTS.sharded
    assert view.table_key == ("status", "shard")
    assert view.columns == ("status", "n")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"table": ""}, "table of another name"),
        ({"table": "counts"}, "table of another name"),
        ({"shard_column": "status"}, "cannot be a key or counter"),
        ({"shard_column": "n"}, "cannot be a key or counter"),
        ({"shard_column": "Shard"}, "lower-case SQL identifier"),
    ],
)
def test_sharded_view_validation(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _sharded(**changes)


def test_a_rebuild_puts_every_key_in_shard_zero() -> None:
    delete, insert = (s.as_string() for s in rebuild_statements(_sharded()))
    assert delete == 'DELETE FROM "count_shards"'
    assert insert == (
        'INSERT INTO "count_shards" ("status", "shard", "n") SELECT "status", 0, "n" FROM'
        ' (SELECT status, count(*) FROM t GROUP BY status) AS rebuilt ("status", "n")'
    )


def test_the_summing_view_keeps_counter_types_and_drops_zero_sums() -> None:
    text = summing_view_statement(_sharded(), {"n": "bigint"}).as_string()
    assert text == (
        'CREATE OR REPLACE VIEW "counts" AS SELECT "status", CAST(sum("n") AS bigint) AS "n"'
        ' FROM "count_shards" GROUP BY "status" HAVING sum("n") <> 0'
    )
