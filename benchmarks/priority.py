"""The learner's update beside other work, at the three ``cpu_priority`` policies.

    hindsight bench priority [--quick] [--json FILE]

The compiled SAC update of ``bench learner``'s shapes (HalfCheetahMO's dimensions,
256x256, batch 256), in two branches on two threads as the learner runs it on 2+ cores
(one thread on a 1-core machine), timed alone and then beside a load of 8 processes that
each wake every 10 ms to spin 0.25-0.75 ms (about 0.3 cores together, the order of what a
run's other actors and Ray's processes use beside its learner on the 2-core box), that load
at normal priority, at nice 19 and in ``SCHED_IDLE`` (``actors/priority.py``). Per case:
updates/s, ``learner_cores`` (the process's CPU time over wall time) and ``load_cores``
(the CPU time the load got); ``learner_cores_kept``: each case's learner cores over alone.
Rounds rotate the cases; medians over rounds. Linux only (elsewhere the result says so).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any

LOAD_PROCESSES = 8
LOAD_PERIOD_S = 0.010
#: each load process spins one of these per period (process i: LOAD_SPIN_S[i % 3])
LOAD_SPIN_S = (0.00025, 0.0005, 0.00075)
CASES = ("alone", "normal", "nice", "idle")


def _load(policy: str, spin_s: float) -> None:
    """One process of the load (spawned): its policy, then spin ``spin_s`` every period."""
    from actors.priority import set_cpu_priority

    set_cpu_priority(policy)
    while True:
        t = time.perf_counter()
        while time.perf_counter() - t < spin_s:
            pass
        time.sleep(LOAD_PERIOD_S)


def _cpu_seconds(pid: int) -> float:
    from benchmarks.cpu_use import _stat

    return _stat(str(pid))[0]


def _case(step: Any, policy: str, seconds: float) -> dict[str, float]:
    import multiprocessing as mp

    procs = []
    if policy != "alone":
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_load, args=(policy, LOAD_SPIN_S[i % len(LOAD_SPIN_S)]), daemon=True)
                 for i in range(LOAD_PROCESSES)]
        for p in procs:
            p.start()
        time.sleep(1.0)  # started and set
    try:
        load0 = sum(_cpu_seconds(p.pid) for p in procs)
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            step(n)
            n += 1
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        load = sum(_cpu_seconds(p.pid) for p in procs) - load0
    finally:
        for p in procs:
            p.kill()
            p.join()
    return {"updates_per_s": n / wall, "learner_cores": cpu / wall, "load_cores": load / wall}


def run(quick: bool = False) -> dict[str, Any]:
    if not sys.platform.startswith("linux"):
        return {"error": f"per-thread CPU priorities are Linux's; this is {sys.platform}"}
    import dataclasses

    import torch

    from benchmarks.learner import ACT, HIDDEN, OBS, TASK, _batches
    from learner.sac.branches import BranchThread, split_threads
    from learner.sac.config import SACConfig
    from learner.sac.update import init_state, update

    threads = min(2, os.cpu_count() or 1)
    seconds, rounds = (1.5, 1) if quick else (10.0, 3)
    cfg = SACConfig(hidden_sizes=(HIDDEN, HIDDEN))
    state = init_state(OBS, ACT, TASK, dataclasses.replace(cfg, compile=not quick), "cpu", seed=0)
    batches = _batches(4, seed=0)
    before = torch.get_num_threads()
    own, branch_threads = split_threads(threads) if threads >= 2 else (1, 0)
    worker = BranchThread(branch_threads) if branch_threads else None
    torch.set_num_threads(own)

    def step(n: int) -> None:
        update(state, batches[n % 4], with_metrics=n % 100 == 0, branches=worker)

    try:
        for i in range(20):  # the compile (or its cache hit) and warm-up
            step(i)
        got: dict[str, list[dict[str, float]]] = {c: [] for c in CASES}
        for r in range(rounds):
            for case in CASES[r % len(CASES):] + CASES[: r % len(CASES)]:
                got[case].append(_case(step, case, seconds))
    finally:
        torch.set_num_threads(before)
        if worker is not None:
            worker.close()
    cases = {c: {k: round(statistics.median(x[k] for x in v), 3) for k in v[0]} for c, v in got.items()}
    cases["alone"].pop("load_cores")  # no load
    alone = cases["alone"]["learner_cores"]
    return {
        "threads": threads, "branches": worker is not None, "compiled": not quick,
        "seconds_per_case": seconds, "rounds": rounds,
        "load": {"processes": LOAD_PROCESSES, "period_s": LOAD_PERIOD_S, "spin_s": list(LOAD_SPIN_S)},
        "cases": cases,
        "learner_cores_kept": {c: round(cases[c]["learner_cores"] / alone, 3) for c in CASES[1:]},
    }
