"""Views over the pipeline's tables: declarative definitions, their migrations, a background
refresher with a consistency watermark, and incremental summaries kept by the pipeline."""

from .builtin import BUILTIN_VIEWS, CUSTOMER_ORDER_TOTALS, ORDER_STATUS_COUNTS, REVENUE_BY_HOUR
from .definitions import (
    MANUAL,
    IncrementalView,
    MaterializedView,
    RefreshPolicy,
    ViewDefinition,
    after_batches,
    every,
)
from .deltas import Delta, aggregate_deltas
from .incremental import rebuild_view
from .materialized import refresh_view
from .migration import create_view_op, drop_view_op
from .refresher import ViewRefresher, refresher_from_settings
from .registry import ViewRegistry, load_registry
from .watermark import PartitionOffset, Refresh

__all__ = [
    "BUILTIN_VIEWS",
    "CUSTOMER_ORDER_TOTALS",
    "MANUAL",
    "ORDER_STATUS_COUNTS",
    "REVENUE_BY_HOUR",
    "Delta",
    "IncrementalView",
    "MaterializedView",
    "PartitionOffset",
    "Refresh",
    "RefreshPolicy",
    "ViewDefinition",
    "ViewRefresher",
    "ViewRegistry",
    "after_batches",
    "aggregate_deltas",
    "create_view_op",
    "drop_view_op",
    "every",
    "load_registry",
    "rebuild_view",
    "refresh_view",
    "refresher_from_settings",
]
