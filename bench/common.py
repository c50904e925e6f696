"""What every benchmark module shares: machine info, robust statistics, one result format.

A benchmark module `bench/bench_<name>.py` defines `run(quick: bool) -> BenchResult` (one that can time a GPU
also takes `device: str`, "auto" meaning the CPU plus a GPU where torch sees one). Everything a
module compares (e.g. cached vs. direct sampling) is measured inside that one run, so ratios hold
even on a loaded shared machine where absolute times drift.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class BenchResult:
    name: str
    rows: list[dict] = field(default_factory=list)  # one dict per measured configuration, printed as a table
    ratios: dict[str, float] = field(default_factory=dict)  # headline comparisons within this run
    notes: list[str] = field(default_factory=list)


def machine_info() -> dict:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def percentiles(samples_s: list[float] | np.ndarray, scale: float = 1e3) -> dict[str, float]:
    """Median, p99 and max of durations (seconds), returned in ms by default."""
    a = np.asarray(samples_s, dtype=float) * scale
    return {
        "p50": float(np.median(a)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
        "n": int(a.size),
    }


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 3) -> np.ndarray:
    """Wall time of each of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out
