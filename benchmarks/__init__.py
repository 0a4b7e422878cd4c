"""Benchmarks: each reports a ratio against a baseline measured in the same run.

    hindsight bench rollout|store|learner|relabel|all [--quick] [--json FILE]
"""

from __future__ import annotations

import importlib
import platform
import time
from typing import Any

import os

NAMES = ("rollout", "store", "learner", "relabel")


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def run_benchmark(name: str, quick: bool = False) -> dict[str, Any]:
    if name == "all":
        return {n: run_benchmark(n, quick) for n in NAMES}
    if name not in NAMES:
        raise KeyError(f"unknown benchmark {name!r} (known: {', '.join(NAMES)}, all)")
    t0 = time.perf_counter()
    result = importlib.import_module(f"benchmarks.{name}").run(quick=quick)
    result["benchmark"] = name
    result["quick"] = quick
    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["machine"] = machine()
    return result
