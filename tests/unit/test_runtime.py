"""Interpreter settings of the `run` process: fewer, cheaper cyclic collections."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from eos_pipeline.runtime import GC_THRESHOLDS, THREADED_SWITCH_INTERVAL_S, tune_for_throughput


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("restored")
def test_collections_are_rarer_and_start_up_objects_are_frozen() -> None:
    interval = sys.getswitchinterval()
    tune_for_throughput(threads=1)
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] >= 50 * 700  # far fewer young collections than the default
    assert gc.get_freeze_count() > 0
    assert sys.getswitchinterval() == interval  # one thread: nothing to hand the GIL to


@pytest.mark.usefixtures("restored")
def test_committing_threads_take_the_gil_back_sooner() -> None:
    tune_for_throughput(threads=4)
    assert sys.getswitchinterval() == pytest.approx(THREADED_SWITCH_INTERVAL_S)
    assert THREADED_SWITCH_INTERVAL_S < 0.005
