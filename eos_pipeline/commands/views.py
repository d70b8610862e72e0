"""`views`: list, refresh, rebuild and show the materialized views and incremental summaries."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import Settings
from ..db import connect
from ..errors import ConfigError
from ..views.definitions import IncrementalView, MaterializedView, ViewDefinition
from ..views.incremental import rebuild_view
from ..views.materialized import refresh_view
from ..views.registry import ViewRegistry, load_registry, modules_from_env
from ..views.render import FORMATS, STATUS_COLUMNS, status_row, table
from ..views.status import fetch_rows, view_status


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "views", help="list, refresh, rebuild and show views"
    )
    parser.add_argument(
        "--views-module",
        action="append",
        metavar="PKG.MOD",
        help="a module whose VIEWS adds view definitions (repeatable; or EOS_VIEWS_MODULES)",
    )
    actions = parser.add_subparsers(dest="views_command", metavar="ACTION", required=True)
    actions.add_parser("list", help="every view: kind, rows, last refresh, as-of offsets")
    refresh = actions.add_parser("refresh", help="refresh materialized views now")
    refresh.add_argument("names", nargs="*", metavar="NAME", help="default: every one")
    rebuild = actions.add_parser("rebuild", help="recompute an incremental summary")
    rebuild.add_argument("name", metavar="NAME")
    show = actions.add_parser("show", help="print a view's rows in key order")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--limit", type=int, default=50, help="rows at most (default 50)")
    show.add_argument("--format", choices=sorted(FORMATS), default="table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    registry = load_registry(args.views_module or modules_from_env())
    handler = _ACTIONS[args.views_command]
    return handler(args, settings, registry)


def _list(args: argparse.Namespace, settings: Settings, registry: ViewRegistry) -> int:
    with connect(settings.database_url, application_name="eos-views") as conn:
        rows = [status_row(view_status(conn, view)) for view in registry]
    print(table(STATUS_COLUMNS, rows))
    return 0


def _materialized(view: ViewDefinition) -> MaterializedView:
    if not isinstance(view, MaterializedView):
        raise ConfigError(f"{view.name} is incremental: `views rebuild {view.name}` recomputes it")
    return view


def _refresh(args: argparse.Namespace, settings: Settings, registry: ViewRegistry) -> int:
    names = args.names or [v.name for v in registry.materialized()]
    views = [_materialized(registry.get(name)) for name in names]
    with connect(settings.database_url, application_name="eos-views") as conn:
        for view in views:
            result = refresh_view(conn, view)
            if result is None:
                print(f"{view.name}: skipped, another session is refreshing it")
            else:
                print(f"{view.name}: refreshed in {result.duration_s * 1000:.0f} ms")
    return 0


def _rebuild(args: argparse.Namespace, settings: Settings, registry: ViewRegistry) -> int:
    view = registry.get(args.name)
    if not isinstance(view, IncrementalView):
        raise ConfigError(f"{view.name} is materialized: `views refresh {view.name}` refreshes it")
    with connect(settings.database_url, application_name="eos-views") as conn:
        result = rebuild_view(conn, view)
    print(f"{view.name}: rebuilt in {result.duration_s * 1000:.0f} ms")
    return 0


def _show(args: argparse.Namespace, settings: Settings, registry: ViewRegistry) -> int:
    view = registry.get(args.name)
    if args.limit < 0:
        raise ConfigError("--limit must not be negative")
    with connect(settings.database_url, application_name="eos-views") as conn:
        columns, rows = fetch_rows(conn, view, args.limit)
    print(FORMATS[args.format](columns, rows))
    return 0


_ACTIONS = {"list": _list, "refresh": _refresh, "rebuild": _rebuild, "show": _show}
