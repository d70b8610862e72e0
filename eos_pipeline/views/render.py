"""Plain-text output for the `views` commands: aligned tables, CSV and JSON."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from .status import ViewStatus


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    texts = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in texts)]) for i, c in enumerate(columns)]
    lines = [list(columns), *texts]
    return "\n".join(
        "  ".join(t.ljust(w) for t, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def as_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([cell(v) for v in row] for row in rows)
    return out.getvalue().rstrip("\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact: numeric columns keep every digit
    raise TypeError(f"cannot encode {type(value).__name__}")


def as_json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    records = [dict(zip(columns, row, strict=True)) for row in rows]
    return orjson.dumps(records, default=_json_default, option=orjson.OPT_INDENT_2).decode()


FORMATS = {"table": table, "csv": as_csv, "json": as_json}

STATUS_COLUMNS = ("name", "kind", "rows", "refreshed_at", "duration", "as_of")


def status_row(status: ViewStatus) -> tuple[str, ...]:
    """One `views list` line; incremental views are live, their time is the last rebuild."""
    if status.rows is None:
        return (status.name, status.kind, "-", "not in database", "", "")
    duration = "" if status.duration_ms is None else f"{status.duration_ms:.0f} ms"
    if status.kind == "incremental":
        as_of = "live (updated in each batch transaction)"
    elif status.offsets is None:
        as_of = "never refreshed"
    else:
        as_of = " ".join(o.describe() for o in status.offsets) or "no partitions yet"
    return (status.name, status.kind, str(status.rows), cell(status.refreshed_at), duration, as_of)
