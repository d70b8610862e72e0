"""`python -m eos_pipeline views ...` as a user runs it, in a subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from .test_views import expected_customer_totals, seed, set_offsets, status_counts, summary

Conn = psycopg.Connection[Any]
ROOT = Path(__file__).resolve().parents[2]


def cli(
    url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eos_pipeline", "--database-url", url, "views", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_refresh_list_and_show(database_url: str, db: Conn) -> None:
    s = seed(db, random.Random(21))
    set_offsets(db, {("orders", 0): 5})
    refreshed = cli(database_url, "refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    assert [line.split(":")[0] for line in refreshed.stdout.splitlines()] == [
        "customer_order_totals",
        "revenue_by_hour",
    ]
    listed = cli(database_url, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["name", "kind", "rows", "refreshed_at", "duration", "as_of"]
    by_name = {line.split()[0]: line for line in lines[1:]}
    customers = len(expected_customer_totals(s))
    assert by_name["customer_order_totals"].split()[1:3] == ["materialized", str(customers)]
    assert by_name["customer_order_totals"].endswith("g:orders[0]=5")
    assert "live" in by_name["order_status_counts"]

    shown = cli(database_url, "show", "customer_order_totals", "--format", "json", "--limit", "3")
    assert shown.returncode == 0, shown.stderr
    expected = expected_customer_totals(s)[:3]
    assert [(r["customer_id"], r["orders"], r["revenue"]) for r in json.loads(shown.stdout)] == [
        (e[0], e[1], str(e[3])) for e in expected
    ]
    as_csv = cli(database_url, "show", "customer_order_totals", "--format", "csv")
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert rows[0] == ["customer_id", "orders", "paid_orders", "revenue", "last_order_at"]
    assert len(rows) == customers + 1


def test_rebuild_repairs_the_summary(database_url: str, db: Conn) -> None:
    s = seed(db, random.Random(22))
    db.execute("UPDATE order_status_count_shards SET orders = orders + 100")
    db.execute("INSERT INTO order_status_count_shards VALUES ('shipped', 5, -7)")
    rebuilt = cli(database_url, "rebuild", "order_status_counts")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert summary(db) == status_counts(s)
    shown = cli(database_url, "show", "order_status_counts", "--format", "csv")
    assert dict(list(csv.reader(io.StringIO(shown.stdout)))[1:]) == {
        k: str(v) for k, v in status_counts(s).items()
    }


def test_errors_are_one_readable_line(database_url: str) -> None:
    for args, message in [
        (("show", "nope"), "unknown view 'nope' (known: customer_order_totals"),
        (("refresh", "order_status_counts"), "order_status_counts is incremental"),
        (("rebuild", "revenue_by_hour"), "revenue_by_hour is materialized"),
    ]:
        result = cli(database_url, *args)
        assert result.returncode == 2
        assert len(result.stderr.splitlines()) == 1
        assert message in result.stderr


def test_user_views_module(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "my_views.py").write_text(
        "from eos_pipeline.views import MaterializedView, every\n"
        "VIEWS = [MaterializedView('big_orders', 'SELECT order_id FROM orders"
        " WHERE total_amount > 100', ('order_id',), refresh=every(60))]\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    listed = cli(database_url, "--views-module", "my_views", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    [line] = [line for line in listed.stdout.splitlines() if line.startswith("big_orders")]
    assert line.split(None, 3)[1:] == ["materialized", "-", "not in database"]
    via_env = cli(database_url, "list", env={**env, "EOS_VIEWS_MODULES": "my_views"})
    assert "big_orders" in via_env.stdout
    refreshed = cli(database_url, "--views-module", "my_views", "refresh", "big_orders", env=env)
    assert refreshed.returncode == 1
    assert "big_orders is not in the database" in refreshed.stderr
