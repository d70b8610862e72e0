"""The benchmark and the reliability harness still run end to end (CI smoke test: their
tables print and they exit 0; no timing is asserted, the machine is shared)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from ..backends import Backend
from .support import ROOT


def _run(module: str, env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


@pytest.mark.timeout(240)
def test_benchmarks_quick(backend: Backend) -> None:
    env = {
        **os.environ,
        "EOS_KAFKA_BOOTSTRAP": backend.kafka_bootstrap,
        "EOS_DATABASE_URL": backend.database_url,
    }
    out = _run("benchmarks", env, timeout=230)
    assert "msg/s (median of 1)" in out
    for mode in (
        "raw consume",
        "raw store (COPY)",
        "eos run, batch 5000",
        "eos run, batch 10000, 2 workers",
        "eos run x2 processes, batch 5000",
        "naive: PG txn/msg",
        "slow handler 5 ms, 4 workers",
        "commit only 5 ms, 4 processes",
        "slow handler 20 ms, 4 workers",
    ):
        assert mode in out
    assert "slow handler 5 ms, 4 workers / commit only, 4 processes" in out
    assert "results: " in out


@pytest.mark.timeout(300)
def test_chaos_quick() -> None:
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but PostgreSQL's server binaries are missing")
        pytest.skip("needs Debian's PostgreSQL server binaries for a private stack")
    out = _run("benchmarks.chaos", dict(os.environ), timeout=290)
    for figure in ("events", "broker restarts", "database restarts", "lost", "duplicated"):
        assert figure in out
    assert "exactly once" in out
