"""Measuring child processes: wall time, CPU and peak RSS of exactly that child (wait4 gives
one child's rusage, where RUSAGE_CHILDREN would mix every child reaped so far)."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .stack import ROOT, child_env


@dataclass(frozen=True)
class Usage:
    returncode: int
    wall_s: float
    cpu_s: float  # user + system, every thread of the child
    max_rss_mib: float


class Child:
    """A child process whose resource usage is collected when it is reaped."""

    def __init__(self, args: Sequence[str], log: Path | None = None) -> None:
        self.started = time.monotonic()
        out: IO[bytes] | int = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            list(args), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=child_env()
        )
        if not isinstance(out, int):
            out.close()
        self.usage: Usage | None = None

    def alive(self) -> bool:
        return self.usage is None and self._reap(os.WNOHANG) is None

    def wait(
        self, timeout: float, poll: Callable[[], None] | None = None, every: float = 0.1
    ) -> Usage:
        """Wait for the exit (calling `poll` meanwhile); kill the child after `timeout`."""
        deadline = self.started + timeout
        while self.usage is None:
            if poll is not None:
                poll()
            if self._reap(os.WNOHANG) is not None:
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                self._reap(0)
                raise TimeoutError(f"{self.proc.args!r} still running after {timeout:.0f} s")
            time.sleep(every)
        assert self.usage is not None
        return self.usage

    def kill(self) -> None:
        if self.usage is None:
            self.proc.kill()
            self._reap(0)

    def _reap(self, options: int) -> Usage | None:
        pid, status, ru = os.wait4(self.proc.pid, options)
        if pid == 0:
            return None
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.usage = Usage(
            self.proc.returncode,
            time.monotonic() - self.started,
            ru.ru_utime + ru.ru_stime,
            ru.ru_maxrss / 1024,  # KiB on Linux
        )
        return self.usage


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): an observed value, no interpolation."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return float(ordered[rank - 1])
