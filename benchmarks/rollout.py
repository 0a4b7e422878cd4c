"""Rollout throughput: one worker with batched policy inference vs bare ``env.step``.

Baseline: the same number of the family's HalfCheetah envs (the env a worker steps: the
family reward and reward inputs computed each step) stepped with uniform random actions and
nothing else (no policy, no recording); plain Gymnasium HalfCheetah-v5 (``gym.make``, its
own reward) is the headline baseline (``ratio_vs_gym_halfcheetah``, median of per-repetition
ratios). Measured: ``RolloutWorker.collect_episodes`` with
the SAC actor's forward pass each step, recording whole trajectories. Both in this
process, one BLAS thread (as in a Ray worker), interleaved repetitions; the ratio is the figure of merit.

``scaling``: W workers as Ray actors with one CPU each, each running rounds back to back
as the trainer's workers do (a worker is handed its next round when its last one returns,
never held for the others), against one worker: ``efficiency`` = rate(W) / (W rate(1)),
the median over 7 repetitions that each time W = 1 and W = W back to back (target 0.9).
rate(W) is the env steps all W made while all W were running (the window from the last
worker's start to the first worker's end of ``ROUNDS`` rounds, a round's steps counted in
proportion to its time inside the window) over that window. Beside it,
``efficiency_one_round``: the same first rounds started together and timed to the
slowest one's end (a barrier the trainer does not have: on this VM a core's speed moves
by tens of percent from one second to the next, and a barrier pays the slower core's
draw every round). And the machine's own ceiling for this work: W Ray actors stepping
plain Gymnasium HalfCheetah-v5 with random actions (the same number of steps a round, no
policy, no recording), timed the same way right after the workers
(``bare_env_efficiency``); ``efficiency_over_machine`` is the workers' efficiency over
it. On a VM whose vCPUs share physical cores, or when other processes hold a core, W
cores do not give W times one core, whatever the code does.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from actors.policy import blas_threads
from actors.rollout import RolloutWorker
from envs import get_family
from learner.sac.config import SACConfig, sac_defaults

FAMILY = "half_cheetah_mo"
ROUNDS = 3  # rounds each worker runs back to back per scaling measurement


def _random_steps_per_s(envs: list, steps: int, seed: int) -> float:
    """Env steps/s of ``envs`` stepped in turn with uniform random actions, nothing else."""
    for i, e in enumerate(envs):
        e.reset(seed=seed + i)
    acts = np.random.default_rng(seed).uniform(-1, 1, size=(steps, len(envs), envs[0].action_space.shape[0]))
    t0 = time.perf_counter()
    for t in range(steps):
        for e, a in zip(envs, acts[t]):
            _, _, te, tr, _ = e.step(a)
            if te or tr:
                e.reset()
    return steps * len(envs) / (time.perf_counter() - t0)


def _bare_steps_per_s(num_envs: int, steps: int, seed: int) -> float:
    """The family's HalfCheetah envs: what a worker steps, without policy or recording."""
    fam = get_family(FAMILY)
    tasks = fam.sample_tasks(np.random.default_rng(seed), num_envs)
    return _random_steps_per_s([fam.make_env(t, seed=seed + i) for i, t in enumerate(tasks)], steps, seed)


def _gym_steps_per_s(num_envs: int, steps: int, seed: int) -> float:
    """Plain Gymnasium HalfCheetah-v5 (no task, no family reward): the simulator's ceiling."""
    import gymnasium as gym

    return _random_steps_per_s([gym.make("HalfCheetah-v5") for _ in range(num_envs)], steps, seed)


def _timed_rounds(round_fn: Callable[[], dict[str, float]], n: int) -> list[tuple[float, float, int]]:
    """(start, end, env steps) of ``n`` rounds back to back. ``time.monotonic`` is the
    machine's one clock (CLOCK_MONOTONIC), so the stamps of actors on one host compare."""
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        steps = int(round_fn()["env_steps"])
        out.append((t0, time.monotonic(), steps))
    return out


def _window_rate(runs: list[list[tuple[float, float, int]]]) -> float:
    """Aggregate env steps/s while every worker ran: from the last first start to the first
    last end, each round's steps counted in proportion to its time inside that window."""
    lo, hi = max(r[0][0] for r in runs), min(r[-1][1] for r in runs)
    if hi <= lo:  # no common window (cannot happen with rounds started together): the barrier rate
        return _barrier_rate(runs)
    steps = sum(n * max(0.0, min(t1, hi) - max(t0, lo)) / (t1 - t0) for r in runs for t0, t1, n in r if t1 > t0)
    return steps / (hi - lo)


def _barrier_rate(runs: list[list[tuple[float, float, int]]]) -> float:
    """Env steps/s of every worker's first round, started together, timed to the last end."""
    first = [r[0] for r in runs]
    return sum(n for _, _, n in first) / (max(t1 for _, t1, _ in first) - min(t0 for t0, _, _ in first))


class _TimedWorker(RolloutWorker):
    """A rollout worker whose rounds return only their stats (no trajectories to ship)."""

    def round(self) -> dict[str, float]:
        return self.collect_episodes()[1]

    def rounds(self, n: int) -> list[tuple[float, float, int]]:
        return _timed_rounds(self.round, n)


class _BareStepper:
    """The machine's ceiling: plain HalfCheetah-v5 envs stepped with random actions, a round
    of ``steps`` steps each (what one worker's round steps), nothing else."""

    def __init__(self, num_envs: int, steps: int, seed: int):
        import gymnasium as gym

        self.envs = [gym.make("HalfCheetah-v5") for _ in range(num_envs)]
        self.steps, self.seed = steps, seed

    def round(self) -> dict[str, float]:
        _random_steps_per_s(self.envs, self.steps, self.seed)
        return {"env_steps": self.steps * len(self.envs)}

    def rounds(self, n: int) -> list[tuple[float, float, int]]:
        return _timed_rounds(self.round, n)


def scaling(num_envs: int, quick: bool) -> dict[str, Any]:
    """W rollout workers (Ray actors, one CPU each) on W cores vs one: aggregate env steps/s
    of one concurrent round each, W = 1 and every power of two up to the core count.

    The largest W's actors are started once; each repetition then times one round on the
    first w of them for every w in turn, and the efficiency of w is the median over
    repetitions of rate(w) / (w rate(1)) within the repetition, so a change in the
    machine's load between repetitions hits both sides of each ratio (this 2-vCPU VM's
    rates drift by tens of percent within a minute). The same for the bare steppers."""
    import os

    import ray

    cores = os.cpu_count() or 1
    sizes = sorted({1, cores} | {w for w in (2, 4, 8, 16, 32, 64) if w <= cores})
    cfg = SACConfig(**sac_defaults(FAMILY))
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(num_cpus=1)(_TimedWorker)
    bare_remote = ray.remote(num_cpus=1)(_BareStepper)
    horizon = 200 if quick else get_family(FAMILY).horizon
    reps = 1 if quick else 7
    rounds = 2 if quick else ROUNDS
    out: dict[str, Any] = {"cores": cores, "envs_per_worker": num_envs, "repetitions": reps}

    def measured(make: Callable[[int], Any]) -> dict[str, dict[int, list[float]]]:
        """Aggregate env steps/s of w actors running ``rounds`` rounds each, started together,
        for every w, each repetition: over the window all ran (``window``) and of the first
        rounds to the slowest's end (``barrier``). The actors are started, warmed up, timed
        and killed: the workers and the bare steppers each hold the cores in turn."""
        actors = [make(i) for i in range(max(sizes))]
        try:
            ray.get([a.round.remote() for a in actors])  # warm-up (and actor start)
            rates: dict[str, dict[int, list[float]]] = {"window": {w: [] for w in sizes},
                                                        "barrier": {w: [] for w in sizes}}
            for _ in range(reps):
                for w in sizes:
                    runs = ray.get([a.rounds.remote(rounds) for a in actors[:w]])
                    rates["window"][w].append(_window_rate(runs))
                    rates["barrier"][w].append(_barrier_rate(runs))
            return rates
        finally:
            for a in actors:
                ray.kill(a)

    def efficiencies(rates: dict[int, list[float]], w: int) -> np.ndarray:
        return np.asarray(rates[w]) / (w * np.asarray(rates[1]))  # per repetition

    try:
        ours = measured(lambda i: remote.remote(worker_id=i, family=FAMILY, num_envs=num_envs, net_cfg=cfg, seed=0))
        bare = measured(lambda i: bare_remote.remote(num_envs, horizon, seed=i))
        out["rounds_per_worker"] = rounds
        for w in sizes:
            effs = efficiencies(ours["window"], w)
            eff = float(np.median(effs))
            bare_eff = float(np.median(efficiencies(bare["window"], w)))
            out[f"W={w}"] = {"env_steps_per_s": round(float(np.median(ours["window"][w])), 1),
                             "speedup": round(w * eff, 3), "efficiency": round(eff, 3),
                             "efficiency_min_max": [round(float(effs.min()), 3), round(float(effs.max()), 3)],
                             "efficiency_one_round": round(float(np.median(efficiencies(ours["barrier"], w))), 3),
                             "bare_env_steps_per_s": round(float(np.median(bare["window"][w])), 1),
                             "bare_env_efficiency": round(bare_eff, 3),
                             "bare_env_efficiency_one_round": round(float(np.median(efficiencies(bare["barrier"], w))), 3),
                             "efficiency_over_machine": round(eff / bare_eff, 3)}
        out["efficiency_all_cores"] = out[f"W={cores}"]["efficiency"]
        out["bare_env_efficiency_all_cores"] = out[f"W={cores}"]["bare_env_efficiency"]
        out["efficiency_one_round_all_cores"] = out[f"W={cores}"]["efficiency_one_round"]
        out["efficiency_over_machine_all_cores"] = out[f"W={cores}"]["efficiency_over_machine"]
        out["target_efficiency"] = 0.9
    finally:
        if started:
            ray.shutdown()
    return out


def run(quick: bool = False) -> dict[str, Any]:
    with blas_threads(1):  # the policy's matmuls as in a Ray worker with one CPU
        return _run(quick)


def _run(quick: bool) -> dict[str, Any]:
    num_envs = 16
    fam = get_family(FAMILY)
    horizon = fam.horizon if not quick else 200
    reps = 2 if quick else 5
    cfg = SACConfig(**sac_defaults(FAMILY))
    worker = RolloutWorker(worker_id=0, family=FAMILY, num_envs=num_envs, net_cfg=cfg, seed=0)
    worker.collect_episodes(random_actions=False)  # warm-up
    bare, ours, ratios, gyms, gym_ratios = [], [], [], [], []
    for r in range(reps):  # interleaved, so that a change in machine load hits all three
        b = _bare_steps_per_s(num_envs, fam.horizon, seed=r)
        t0 = time.perf_counter()
        _, stats = worker.collect_episodes(random_actions=False)
        o = stats["env_steps"] / (time.perf_counter() - t0)
        g = _gym_steps_per_s(num_envs, horizon, seed=r)
        bare.append(b)
        ours.append(o)
        gyms.append(g)
        ratios.append(o / b)
        gym_ratios.append(o / g)
    gym_rate = float(np.median(gyms))
    b, o = float(np.median(bare)), float(np.median(ours))
    return {
        "family": FAMILY,
        "envs_per_worker": num_envs,
        "steps_per_measure": num_envs * fam.horizon,
        "repetitions": reps,
        "bare_env_steps_per_s": round(b, 1),
        "worker_env_steps_per_s": round(o, 1),
        "ratio": round(float(np.median(ratios)), 3),
        "ratio_min_max": [round(min(ratios), 3), round(max(ratios), 3)],
        "target_ratio": 0.8,
        "gym_halfcheetah_steps_per_s": round(gym_rate, 1),
        "ratio_vs_gym_halfcheetah": round(float(np.median(gym_ratios)), 3),
        "ratio_vs_gym_min_max": [round(min(gym_ratios), 3), round(max(gym_ratios), 3)],
        "scaling": scaling(2 if quick else num_envs, quick),
    }
