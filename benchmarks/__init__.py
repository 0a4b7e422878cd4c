"""Benchmarks: each reports a ratio against a baseline measured in the same run.

    hindsight bench rollout|store|learner|relabel|all [--quick] [--json FILE]
    hindsight bench learner --device cuda       # eager vs CUDA-graph updates on the GPU
    hindsight bench relabel --families point_reacher --strategies air [--per-call 16]
                                                # relabel capacity of some families only
    hindsight bench e2e [--quick]               # training vs Stable-Baselines3 SAC (not in "all")
    hindsight bench priority [--quick]          # the learner's update beside a load at each cpu_priority

Each result records the machine and its load average at the start, so a figure measured
on a busy machine says so.
"""

from __future__ import annotations

import importlib
import platform
import time
from typing import Any

import os

NAMES = ("rollout", "store", "learner", "relabel")
#: run by name only (minutes long): not part of "all"
EXTRA = ("e2e", "priority")


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def run_benchmark(name: str, quick: bool = False, device: str | None = None, steps: int | None = None,
                  families: list[str] | None = None, strategies: list[str] | None = None,
                  per_call: int | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    if name == "all":
        return {n: run_benchmark(n, quick) for n in NAMES}
    if name not in NAMES + EXTRA:
        raise KeyError(f"unknown benchmark {name!r} (known: {', '.join(NAMES + EXTRA)}, all)")
    if device is not None and name != "learner":
        raise ValueError(f"--device applies to the learner benchmark only, not {name!r}")
    t0 = time.perf_counter()
    load = machine()["load_average_1_5_15"]
    if steps is not None and name != "e2e":
        raise ValueError(f"--steps applies to the e2e benchmark only, not {name!r}")
    if overrides and name != "e2e":
        raise ValueError(f"--set applies to the e2e benchmark only, not {name!r}")
    relabel_only = {"families": families, "strategies": strategies, "per_call": per_call}
    given = [k for k, v in relabel_only.items() if v is not None]
    if name == "e2e" and given == ["strategies"]:  # e2e: which strategies Hindsight runs
        pass
    elif given and name != "relabel":
        raise ValueError(f"--{given[0].replace('_', '-')} applies to the relabel benchmark only, not {name!r}")
    kwargs: dict[str, Any] = {"device": device} if device is not None else {}
    kwargs.update({k: relabel_only[k] for k in given})
    if steps is not None:
        kwargs["steps"] = steps
    if overrides:
        kwargs["overrides"] = list(overrides)
    result = importlib.import_module(f"benchmarks.{name}").run(quick=quick, **kwargs)
    result["benchmark"] = name
    result["quick"] = quick
    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["machine"] = {**machine(), "load_average_at_start": load}
    return result


# ---- the targets a result is read against ------------------------------------------------
#: per benchmark: (label, path of the measured field, path of its target), paths dotted; a
#: "*" segment stands for every key at that level (each becomes its own line)
_TARGETS: dict[str, list[tuple[str, str, str]]] = {
    "rollout": [
        ("policy-in-the-loop rollout over plain env.step", "ratio_vs_gym_halfcheetah", "target_ratio"),
        ("scaling efficiency on every core", "scaling.efficiency_all_cores", "scaling.target_efficiency"),
    ],
    "learner": [
        ("share of the FLOP ceiling", "ratio_of_flop_ceiling", "target_ratio_of_flop_ceiling"),
        ("CUDA updates/s", "updates_per_s", "target_updates_per_s"),
    ],
    "relabel": [
        ("smallest AIR speedup over the naive form", "min_speedup_required_cases", "target_ratio"),
        ("smallest relabel capacity over collection", "capacity.min_ratio", "capacity.target_ratio"),
    ],
    "e2e": [
        ("env steps/s over Stable-Baselines3 (none)", "ratio_vs_sb3_none", "target_ratio_vs_sb3"),
        ("env steps/s over Stable-Baselines3 (air)", "ratio_vs_sb3_air", "target_ratio_vs_sb3"),
        ("learner in the run over alone (*)", "hindsight.*.learner_in_run_over_isolated",
         "target_learner_in_run_over_isolated"),
    ],
}


def _at(d: Any, path: list[str]) -> list[tuple[str, Any]]:
    """(the key a "*" matched, or "", value) for each place ``path`` reaches in ``d``."""
    if not path:
        return [("", d)]
    head, rest = path[0], path[1:]
    if not isinstance(d, dict):
        return []
    if head == "*":
        return [(k, v) for k, sub in d.items() for _, v in _at(sub, rest)]
    return _at(d[head], rest) if head in d else []


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The result's headline fields against their targets: one entry per measured value
    present (label, field, value, target, met), in ``_TARGETS``' order; a benchmark without
    targets (store, priority) gives none."""
    rows = []
    for label, field, target_field in _TARGETS.get(result.get("benchmark", ""), []):
        target = _at(result, target_field.split("."))
        if len(target) != 1 or not isinstance(target[0][1], (int, float)):
            continue
        goal = float(target[0][1])
        for key, value in _at(result, field.split(".")):
            if isinstance(value, (int, float)):
                rows.append({"label": label.replace("*", key), "field": field.replace("*", key),
                             "value": float(value), "target": goal, "met": float(value) >= goal})
    return rows


def format_targets(result: dict[str, Any]) -> str:
    """``targets`` as lines for the console (empty when the benchmark has none)."""
    rows = targets(result)
    if not rows:
        return ""
    lines = [f"{result['benchmark']}: targets on this machine ({result.get('machine', {}).get('cpu', '?')}, "
             f"{result.get('machine', {}).get('cores', '?')} cores{', quick sizes' if result.get('quick') else ''})"]
    for r in rows:
        lines.append(f"  {'met    ' if r['met'] else 'NOT met'} {r['label']}: {r['value']:.3g} (target {r['target']:g}; {r['field']})")
    return "\n".join(lines)
