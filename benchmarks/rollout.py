"""Rollout throughput: one worker with batched policy inference vs bare ``env.step``.

Baseline: the same number of the family's HalfCheetah envs (the env a worker steps: the
family reward and reward inputs computed each step) stepped with uniform random actions and
nothing else (no policy, no recording); plain Gymnasium HalfCheetah-v5 (``gym.make``, its
own reward) is the headline baseline (``ratio_vs_gym_halfcheetah``, median of per-repetition
ratios). Measured: ``RolloutWorker.collect_episodes`` with
the SAC actor's forward pass each step, recording whole trajectories. Both in this
process, one BLAS thread (as in a Ray worker), interleaved repetitions; the ratio is the figure of merit.

``scaling``: W workers as Ray actors with one CPU each, one concurrent round each, against
one worker: ``efficiency`` = rate(W) / (W rate(1)), the median over 7 repetitions that
each time W = 1 and W = W back to back (target 0.9). Beside it, the machine's
own ceiling for this work: W Ray actors stepping plain Gymnasium HalfCheetah-v5 with random
actions (the same number of steps, no policy, no recording), timed the same way right
after the workers (``bare_env_efficiency``); ``efficiency_over_machine`` is the
workers' efficiency over it. On a VM whose vCPUs share physical cores, or when other
processes hold a core, W cores do not give W times one core, whatever the code does.
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


class _TimedWorker(RolloutWorker):
    """A rollout worker whose round returns only its stats (no trajectories to ship)."""

    def round(self) -> dict[str, float]:
        return self.collect_episodes()[1]


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
    out: dict[str, Any] = {"cores": cores, "envs_per_worker": num_envs, "repetitions": reps}

    def measured(make: Callable[[int], Any]) -> dict[int, list[float]]:
        """Aggregate env steps/s of w actors' concurrent rounds, for every w, each repetition
        (the actors started, warmed up, timed, killed: the workers and the bare steppers
        each hold the cores in turn)."""
        actors = [make(i) for i in range(max(sizes))]
        try:
            ray.get([a.round.remote() for a in actors])  # warm-up (and actor start)
            rates: dict[int, list[float]] = {w: [] for w in sizes}
            for _ in range(reps):
                for w in sizes:
                    t0 = time.perf_counter()
                    stats = ray.get([a.round.remote() for a in actors[:w]])
                    rates[w].append(sum(st["env_steps"] for st in stats) / (time.perf_counter() - t0))
            return rates
        finally:
            for a in actors:
                ray.kill(a)

    try:
        ours = measured(lambda i: remote.remote(worker_id=i, family=FAMILY, num_envs=num_envs, net_cfg=cfg, seed=0))
        bare = measured(lambda i: bare_remote.remote(num_envs, horizon, seed=i))
        for w in sizes:
            effs = np.asarray(ours[w]) / (w * np.asarray(ours[1]))  # per repetition
            eff = float(np.median(effs))
            bare_eff = float(np.median(np.asarray(bare[w]) / (w * np.asarray(bare[1]))))
            out[f"W={w}"] = {"env_steps_per_s": round(float(np.median(ours[w])), 1),
                             "speedup": round(w * eff, 3), "efficiency": round(eff, 3),
                             "efficiency_min_max": [round(float(effs.min()), 3), round(float(effs.max()), 3)],
                             "bare_env_steps_per_s": round(float(np.median(bare[w])), 1),
                             "bare_env_efficiency": round(bare_eff, 3),
                             "efficiency_over_machine": round(eff / bare_eff, 3)}
        out["efficiency_all_cores"] = out[f"W={cores}"]["efficiency"]
        out["bare_env_efficiency_all_cores"] = out[f"W={cores}"]["bare_env_efficiency"]
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
